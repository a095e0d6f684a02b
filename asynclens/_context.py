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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .propagation import SpanContext
    from .session import Session
    from .tracing import LiveSpan

active: Session | None = None

current_span: ContextVar[LiveSpan | None] = ContextVar("asynclens.current_span", default=None)

#: The remote parent (W3C ``traceparent``) the current trace continues, set by
#: ``span(name, parent=ctx)``; ``propagation.inject`` passes its ``tracestate`` on.
remote_parent: ContextVar[SpanContext | None] = ContextVar("asynclens.remote_parent", default=None)


def set_active(session: Session | None) -> None:
    global active
    active = session


def get_current_span() -> Any:
    return current_span.get()
