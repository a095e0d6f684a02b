"""The lag probe: event-loop lag, utilisation, stalls and the watchdog that samples them."""

from .probe import LagProbe

__all__ = ["LagProbe"]
