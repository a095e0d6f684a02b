"""The example service ``python -m asynclens demo`` runs, shipped with the package.

``service.py`` here is the real file; the source checkout's ``examples/service.py``
is a link to it. Run it from a copy outside the package (the CLI's ``demo`` does):
the probes take frames in the asynclens folder for asynclens's own and skip them.
"""

from __future__ import annotations

import os

__all__ = ["SERVICE"]

#: The path of the example service's source.
SERVICE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "service.py")
