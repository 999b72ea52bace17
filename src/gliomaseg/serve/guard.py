"""The viewer's ASGI middleware: :class:`Guard` (security headers, Host and Origin checks, a readable 500) and
:class:`BodyLimit` (413 for an oversized request body), with their constants."""

from __future__ import annotations

import logging
from typing import Sequence

from fastapi.responses import JSONResponse

from gliomaseg.serve.limits import UploadTooLarge

log = logging.getLogger("gliomaseg.serve")
# Multipart framing (boundaries, part headers) on top of the files themselves.
_FORM_OVERHEAD = 1 << 20
_DRAIN_FACTOR = 4
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Guard:
    """ASGI middleware, outermost: the security headers on every answer (413s and 500s too), the Host check and the
    cross-origin check, and a readable 500 instead of an exception that escaped.

    Host: only the names the server was started for (loopback names, and ``--host``) are served, so a page that
    rebinds its own DNS name to 127.0.0.1 gets nothing back. Origin: a state-changing request (not GET, HEAD or
    OPTIONS) is refused unless it carries no ``Origin`` or one equal to the server's own (``http://`` + Host): a
    multipart POST from another site needs no CORS preflight, so without this any page the user visits could
    upload to the viewer. ``Origin: null`` (sandboxed frames, files) is refused too.
    """

    def __init__(self, app, allowed_hosts: Sequence[str] | None):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.strip("[]").lower() for h in allowed_hosts}

    @staticmethod
    def _hostname(host: str) -> str:
        host = host.strip().lower()
        if host.startswith("["):  # [::1]:8000
            return host[1:].split("]", 1)[0]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    async def _refuse(self, scope, receive, send, status: int, message: str) -> None:
        response = JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)
        await response(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if self.allowed is not None and self._hostname(host) not in self.allowed:
            log.warning("refused a request for host %r", host[:100])
            return await self._refuse(scope, receive, send, 421, f"host {host[:100]!r} is not served here; open the viewer "
                                      "at the address it printed when it started")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin is not None and origin.lower() != f"http://{host}".lower():
            log.warning("refused a %s from origin %r", scope["method"], origin[:100])
            return await self._refuse(scope, receive, send, 403, f"requests from another site ({origin[:100]}) are refused; "
                                      "use the viewer's own page")
        started = False

        async def with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []), *((k.lower().encode(), v.encode())
                                                   for k, v in SECURITY_HEADERS.items() if k.lower().encode() not in present)]}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception as exc:  # ExceptionGroup from a task group included: answer, never a bare 500 or a reset
            too_large = _find(exc, UploadTooLarge)
            if too_large is None:
                log.exception("unexpected error on %s", scope.get("path"))
            if not started:
                status, message = ((413, str(too_large)) if too_large is not None else
                                   (500, f"internal error ({type(exc).__name__}); the server log has the details"))
                await self._refuse(scope, receive, send, status, message)


def _find(exc: BaseException, kind: type) -> BaseException | None:
    """``exc`` or the first exception of type ``kind`` inside it (exception groups, causes)."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find(inner, kind)
        if found is not None:
            return found
    return _find(exc.__cause__, kind) if exc.__cause__ is not None else None


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, by its Content-Length or as it streams in.

    The rest of an oversized body is read and dropped (up to ``_DRAIN_FACTOR`` times the limit) before the
    answer, so that a client still sending sees the 413 and its message instead of a reset connection.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit + _FORM_OVERHEAD
        self.message = f"upload larger than the limit of {limit / (1 << 20):g} MiB"

    async def _drain(self, receive, received: int) -> None:
        while received <= self.limit * _DRAIN_FACTOR:
            event = await receive()
            if event["type"] != "http.request":
                return
            received += len(event.get("body", b""))
            if not event.get("more_body", False):
                return

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._drain(receive, 0)
            response = JSONResponse({"error": self.message}, status_code=413, headers={"Connection": "close", **SECURITY_HEADERS})
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    if event.get("more_body", False):
                        await self._drain(receive, received)
                    raise UploadTooLarge(self.message)
            return event

        return await self.app(scope, counted, send)
