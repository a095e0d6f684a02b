"""Ambient state: the active session and current span (:mod:`.context`), and the
clock seam (:mod:`.clock`). Nothing here imports the rest of asynclens."""
