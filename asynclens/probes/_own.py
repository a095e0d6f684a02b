"""Where asynclens's own code lives, so that probes can skip its frames."""

from __future__ import annotations

import os

__all__ = ["PACKAGE_DIR"]

#: The ``asynclens/`` folder, ending in a separator: a frame whose file starts with it is ours.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
