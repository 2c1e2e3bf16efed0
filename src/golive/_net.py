"""Network checks both servers (the web app, golive serve) make before they start: is a host loopback, can a port
be listened on."""

from __future__ import annotations

import ipaddress
import socket

from golive.errors import GoliveError

__all__ = ["check_port", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int, what: str = "") -> None:
    """Refuse, before anything starts, a port that cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise GoliveError(
                f"cannot listen on {host}:{port}{' for ' + what if what else ''}: {exc.strerror or exc}",
                hint="pick another port, or stop what listens there",
            ) from None
