"""Spans: ``@trace`` and ``span()`` (:mod:`.spans`), W3C trace-context propagation
(:mod:`.propagation`), and the context carried into executor threads (:mod:`.executor`)."""

from .spans import LiveSpan, current_span, span, trace

__all__ = ["LiveSpan", "current_span", "span", "trace"]
