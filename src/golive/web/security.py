"""The web app's gate: Host (DNS rebinding), token, and Origin (cross-site requests) checks.

Every request, page and API alike, passes here first:

- its Host header must name the address the server is bound to (a loopback bind also answers to
  ``localhost``), so a web page whose name was re-pointed at 127.0.0.1 cannot read the app;
- when the server has a token (always, unless it is bound to a loopback address), the request carries it:
  ``Authorization: Bearer T``, the ``golive_token`` cookie, or ``?token=T`` (which sets the cookie);
- a state-changing request (POST, PUT, PATCH, DELETE) carries an Origin header naming this same server,
  so a page on another site cannot submit or cancel jobs.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from golive._net import check_port, is_loopback

__all__ = ["Gate", "Refusal", "check_port", "is_loopback"]

TOKEN_COOKIE = "golive_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _split_host(value: str) -> tuple[str, int | None]:
    """``name:port`` (or ``[v6]:port``) as (lower-case name, port or None)."""
    try:
        parts = urlsplit("//" + value)
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


@dataclass
class Refusal:
    status: int
    message: str
    hint: str = ""


@dataclass
class Gate:
    host: str
    port: int
    token: str | None = None
    names: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        bound = self.host.strip("[]").lower()
        self.any_host = bound in ("0.0.0.0", "::", "")
        self.names = {bound} | (self.names or set())
        if is_loopback(bound):
            self.names |= {"localhost", "127.0.0.1", "::1"}

    def check_host(self, host_header: str | None) -> Refusal | None:
        if self.any_host:
            return None  # bound to every address: the token (required there) is the guard
        name, port = _split_host(host_header or "")
        if name not in self.names or (port is not None and port != self.port):
            return Refusal(
                421,
                f"this server does not answer to the host name {host_header!r}",
                f"open it as http://{self.host}:{self.port}/",
            )
        return None

    def check_token(self, header: str | None, cookie: str | None, query: str | None) -> Refusal | None:
        if not self.token:
            return None
        given = None
        if header and header.lower().startswith("bearer "):
            given = header[7:].strip()
        given = given or cookie or query
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        return Refusal(
            401,
            "this golive server needs its token",
            "open the URL that golive ui printed (it ends in ?token=...), or send Authorization: Bearer TOKEN",
        )

    def check_origin(self, method: str, origin: str | None, host_header: str | None) -> Refusal | None:
        if method.upper() not in UNSAFE_METHODS:
            return None
        if not origin or origin == "null":
            return Refusal(
                403,
                "a state-changing request needs an Origin header naming this server",
                "send it from the golive page itself, or add Origin: http://HOST:PORT",
            )
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != (host_header or "").lower():
            return Refusal(
                403, f"cross-site request refused: Origin {origin} is not this server", "submit jobs from the golive page itself"
            )
        return None
