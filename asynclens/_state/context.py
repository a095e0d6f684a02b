"""The one home of asynclens's ambient state.

* ``active``: the one recording session of the process, or ``None``. A plain
  module global rather than a ``ContextVar`` because a session records the whole
  process: threads started with ``threading.Thread`` do not inherit contexts, and
  their traced calls must still be seen. Reading it is one global lookup.
* ``current_span``: the live span of the running task/thread, a ``ContextVar``,
  so it follows ``await``, is copied into tasks at creation, and is carried into
  executor threads by asynclens while a session is active.

Everything that sets ``current_span`` resets it with the token it got back, in
the same context it was set in (never across a ``yield``), so no
"token was created in a different Context" error can reach user code.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

# Typed as Any on purpose: this module imports nothing of asynclens, so that the
# state sits below every other part (the session and span types live above it).
active: Any = None  # the active Session, or None

current_span: ContextVar[Any] = ContextVar("asynclens.current_span", default=None)  # a LiveSpan

#: The remote parent (W3C ``traceparent``) the current trace continues, set by
#: ``span(name, parent=ctx)``; ``propagation.inject`` passes its ``tracestate`` on.
remote_parent: ContextVar[Any] = ContextVar("asynclens.remote_parent", default=None)


def set_active(session: Any) -> None:
    global active
    active = session


def get_current_span() -> Any:
    return current_span.get()
