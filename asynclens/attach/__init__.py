"""Attaching to a running Python 3.14+ process (``python -m asynclens attach PID``).

``checks`` tells whether a PID can be attached to (one line per reason it cannot),
``bootstrap`` writes the script ``sys.remote_exec`` runs in the target, ``target``
is the session side that runs there, and ``attacher`` drives it all from the
attaching process. See ``docs/attach.md``.
"""
