"""Loopback ports: is one answering, and one nobody uses (for a stack of a test's own)."""

from __future__ import annotations

import contextlib
import random
import socket

# Ports for a test's own services are picked below the kernel's ephemeral range (Linux:
# /proc/sys/net/ipv4/ip_local_port_range, 32768-60999) and above the local services'
# (15432, 18830, 19092-19093). A port the kernel picked was in that range: while a Kafka
# node of the test cluster was down, an outgoing connection got its port as a local
# port, and the node could not bind it again ("BindException: Address already in use",
# soak and CI, stop 32).
PICK_FROM, PICK_TO = 20000, 32000


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback port no one listens on now, outside the ephemeral range (see above)."""
    return free_port_run(1)


def free_port_run(count: int, attempts: int = 200) -> int:
    """The first of ``count`` consecutive loopback ports no one listens on now
    (a Kafka cluster on loopback: each node takes a port and the next)."""
    for _ in range(attempts):
        first = random.randrange(PICK_FROM, PICK_TO - count)
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no run of {count} free loopback ports found")
