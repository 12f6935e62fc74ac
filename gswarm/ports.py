"""Free loopback ports for servers that tests, benchmarks and scripts start.

A port the kernel hands out for ``bind(0)`` lies in the ephemeral range, the same range it
draws from for outgoing connections: by the time a server binds it (or binds it again
after a restart) a client socket may hold it. Ports below that range are never taken that
way, so servers get theirs there.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from gswarm.errors import PortInUseError

LOWEST = 20_000


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 if it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 1, rng: random.Random | None = None) -> int:
    """A port ``p`` on 127.0.0.1 such that ``p .. p+span-1`` are free, below the ephemeral
    range (falls back to one the kernel picks, for ``span == 1``)."""
    rng = rng or random.SystemRandom()
    high = ephemeral_low() - span
    if high > LOWEST:
        for _ in range(200):
            port = rng.randrange(LOWEST, high)
            if all(_bindable(port + i) for i in range(span)):
                return port
    if span != 1:
        raise OSError(f"no {span} consecutive free ports found on 127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_free(host: str, port: int, what: str, setting: str) -> None:
    """Raise :class:`PortInUseError` if a server could not listen on ``host:port``.

    Servers set ``SO_REUSEADDR``, so the probe does too: a port only held by connections
    closing (TIME_WAIT) is free for them; one another process listens on is not.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}; stop what "
                f"holds the port or choose another one with {setting}") from None
