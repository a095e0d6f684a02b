"""W3C trace-context propagation (``traceparent``/``tracestate``): the public path
of :mod:`asynclens.tracing.propagation`."""

from .tracing.propagation import SpanContext, extract, format_traceparent, inject, parse_traceparent

__all__ = ["SpanContext", "extract", "format_traceparent", "inject", "parse_traceparent"]
