"""Byte and segment counters of a TCP connection, read from the kernel (Linux ``TCP_INFO``).

The kernel counts every byte a TCP socket carries, so reading its counters when
asked (a rate window, a snapshot, the connection's end) costs nothing per send
or receive: counting in Python would cost a hook on every ``write`` and every
``data_received``. Offsets are those of ``struct tcp_info`` in ``linux/tcp.h``;
the kernel returns as much of it as it knows, so the length says which fields exist.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["AVAILABLE", "is_tcp", "read"]

_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if hasattr(socket, "IPPROTO_TCP") else None
#: Through ``tcpi_bytes_retrans`` (Linux 4.19+).
_WANT = 216
# tcpi_bytes_received (u64) at 128, segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out (u32)
_RECEIVED_ON = struct.Struct("=QIIIIII")
# tcpi_bytes_acked (u64) at 120; tcpi_bytes_sent, tcpi_bytes_retrans (u64) at 200
_U64 = struct.Struct("=Q")
_SENT_RETRANS = struct.Struct("=QQ")
#: States in which the peer's FIN has arrived: the kernel counts it as a received byte.
#: CLOSE (7) also follows a reset, which carries no such byte: there a reset connection
#: that had received data is counted one byte short (an orderly close, far more common,
#: is exact).
_FIN_RECEIVED = frozenset({6, 7, 8, 9, 11})  # TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING

AVAILABLE = _TCP_INFO is not None


def is_tcp(sock: Any) -> bool:
    """Whether ``sock`` (a socket or a transport's socket wrapper) is a TCP stream socket."""
    try:
        return sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
    except Exception:
        return False


def read(sock: Any) -> tuple[int, int, int] | None:
    """``(bytes written by the program, bytes received, data segments in + out)``, or
    ``None`` where the kernel does not say (not Linux, a kernel older than 4.6).

    Bytes written are the bytes handed to the kernel: first transmissions plus what
    still waits in the send queue (retransmissions are not counted twice). Raises
    ``OSError`` if the socket is closed.
    """
    if _TCP_INFO is None:
        return None
    raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _WANT)
    if len(raw) < 160:
        return None
    received, _, _, notsent, _, segs_in, segs_out = _RECEIVED_ON.unpack_from(raw, 128)
    if raw[0] in _FIN_RECEIVED and received:
        received -= 1
    if len(raw) >= _WANT:
        sent, retrans = _SENT_RETRANS.unpack_from(raw, 200)
        written = sent - retrans + notsent
    else:  # before 4.19: acknowledged bytes (the few in flight are missing)
        written = _U64.unpack_from(raw, 120)[0] + notsent
    return written, received, segs_in + segs_out
