"""The web app's guards, as plain ASGI middlewares (so every route is covered, however a page module registers it),
plus the CSRF token helpers and the login rate limiter.

Order, outermost first (create_app adds them): ``SecurityHeaders`` → ``ErrorBoundary`` → ``BodyLimit`` → Starlette's
``SessionMiddleware`` (signed cookie) → ``CSRFMiddleware`` → FastAPI's exception handlers → the routers.

- ``BodyLimit``: a Content-Length over the limit is refused before the body is read; a body without one (chunked) is
  counted while it streams and the read that crosses the limit raises a 413 — never buffered whole first.
- ``CSRFMiddleware``: every POST/PUT/PATCH/DELETE must carry the session's token, in the ``X-CSRF-Token`` header
  (HTMX sends it from ``hx-headers`` on <body>; API clients take it from ``GET /api/me``) or in the form field
  ``csrf_token``. For a multipart upload only the start of the body is scanned for that field (templates put it
  first) and the scanned bytes are handed on unchanged, so a large upload is never held in memory. A refusal is a
  403 with a message saying what to do.
- ``ErrorBoundary``: an unexpected exception is logged with its traceback and a reference id; the response is the
  generic error page (or JSON) with that id, never the traceback.
- ``SecurityHeaders``: a strict Content-Security-Policy (scripts only from /static; no inline script, no eval),
  no framing, no MIME sniffing, no caching of pages. A page that needs more (Vega's expression compiler needs eval)
  sends its own Content-Security-Policy header, e.g. ``CSP_WITH_EVAL``; the middleware keeps a header a route set.

What this module does not do: authentication (deps.py), rendering (render.py).
"""
from __future__ import annotations

import collections
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import TooManyRequests, reference_id

log = logging.getLogger("embedlab.web")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_SESSION_KEY = "csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSRF_SCAN_BYTES = 64 * 1024  # a multipart form must carry csrf_token within its first 64 KiB (templates put it first)
FORM_MAX_BYTES = 1024 * 1024  # a urlencoded form is small: read whole (to find the token) only up to this

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
       "frame-ancestors 'none'")
# Vega compiles its expressions with Function(): chart pages send this instead (the script source stays 'self').
CSP_WITH_EVAL = CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-eval'")

# (request, status, message) -> the response to send: render.error_response, handed in by create_app.
ErrorRenderer = Callable[[Request, int, str], Awaitable[Response]]


# -- CSRF tokens ---------------------------------------------------------------------------------------------------

def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (the login form gets one before anybody is signed in)."""
    session = request.session
    token = session.get(CSRF_SESSION_KEY)
    if not token:
        token = session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def new_session(request: Request, **values) -> None:
    """Replace the session (at login: nothing of the anonymous session survives, the CSRF token included)."""
    request.session.clear()
    request.session.update(values)
    request.session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)


class BodyTooLarge(HTTPException):
    """Raised by the counting ``receive`` of BodyLimit. An HTTPException so that FastAPI's body parsing passes it on
    unchanged (it turns other errors into a 400) and the app's handler renders it."""

    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body too large: the limit is {_size(limit)}")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return str(n)


# -- middlewares -----------------------------------------------------------------------------------------------------

class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, render_error: ErrorRenderer):
        self.app, self.max_bytes, self.render_error = app, max_bytes, render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False  # the server refuses a malformed Content-Length itself
            if too_big:
                error = BodyTooLarge(self.max_bytes)
                response = await self.render_error(Request(scope), 413, error.detail)
                response.headers["Connection"] = "close"  # the unread body must not be taken as the next request
                return await response(scope, receive, send)
        seen = 0
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


class CSRFMiddleware:
    def __init__(self, app: ASGIApp, render_error: ErrorRenderer):
        self.app, self.render_error = app, render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            return await self.app(scope, receive, send)
        request = Request(scope)
        expected = scope.get("session", {}).get(CSRF_SESSION_KEY)
        headers = Headers(scope=scope)
        token = headers.get(CSRF_HEADER)
        replay = receive
        if token is None:
            try:
                token, replay = await _token_from_body(headers, receive)
            except BodyTooLarge as e:
                return await (await self.render_error(request, 413, e.detail))(scope, receive, send)
        if not expected or not token or not hmac.compare_digest(str(token).encode(), str(expected).encode()):
            why = "missing" if not token else ("not one this session issued" if expected else "from an expired session")
            message = (f"CSRF check failed: the security token is {why}. Reload the page and try again "
                       f"(API clients: send the X-CSRF-Token header from GET /api/me).")
            log.warning("CSRF refusal: %s %s (%s)", scope["method"], scope["path"], why)
            return await (await self.render_error(request, 403, message))(scope, receive, send)
        await self.app(scope, replay, send)


async def _token_from_body(headers: Headers, receive: Receive) -> tuple[str | None, Receive]:
    """The csrf_token form field, read from the start of the body, and a ``receive`` that replays what was read."""
    content_type, options = parse_options_header(headers.get("content-type"))
    buffered: list[Message] = []
    done = False

    async def pull() -> bytes:
        nonlocal done
        message = await receive()
        buffered.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            done = True
        return message.get("body", b"") if message["type"] == "http.request" else b""

    token = None
    if content_type == b"application/x-www-form-urlencoded":
        body = bytearray()
        while not done:
            body += await pull()
            if len(body) > FORM_MAX_BYTES:
                raise BodyTooLarge(FORM_MAX_BYTES)
        for key, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            if key == CSRF_FIELD:
                token = value
                break
    elif content_type == b"multipart/form-data" and options.get(b"boundary"):
        scanner = _MultipartTokenScanner(options[b"boundary"])
        scanned = 0
        while not done and scanner.token is None and scanned < CSRF_SCAN_BYTES and not scanner.failed:
            chunk = await pull()
            scanned += len(chunk)
            scanner.feed(chunk)
        token = scanner.token
    replayed = collections.deque(buffered)

    async def replay() -> Message:
        if replayed:
            return replayed.popleft()
        return await receive()

    return token, replay


class _MultipartTokenScanner:
    """Feeds a multipart body to python-multipart's streaming parser until the csrf_token part is complete."""

    def __init__(self, boundary: bytes):
        self.token: str | None = None
        self.failed = False
        self._header_name = b""
        self._header_value = b""
        self._name: bytes | None = None
        self._data = bytearray()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": self._field, "on_header_value": self._value, "on_header_end": self._header_end,
        })

    def feed(self, chunk: bytes) -> None:
        if chunk and not self.failed:
            try:
                self._parser.write(chunk)
            except Exception:  # a malformed body: no token, so a 403 (never a 500)
                self.failed = True

    def _begin(self) -> None:
        self._name, self._data = None, bytearray()

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            _, options = parse_options_header(self._header_value)
            self._name = options.get(b"name")
        self._header_name, self._header_value = b"", b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == CSRF_FIELD.encode() and len(self._data) < 1024:
            self._data += data[start:end]

    def _part_end(self) -> None:
        if self._name == CSRF_FIELD.encode() and self.token is None:
            self.token = self._data.decode("latin-1")


class ErrorBoundary:
    def __init__(self, app: ASGIApp, render_error: ErrorRenderer):
        self.app, self.render_error = app, render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            ref = reference_id()
            log.exception("unexpected error, ref %s: %s %s", ref, scope.get("method"), scope.get("path"))
            if started:  # part of the response is out: nothing sensible can follow it; the server closes it
                return
            message = f"Something went wrong on the server (error ref {ref}). It has been logged; please report " \
                      f"the reference to your administrator."
            try:
                response = await self.render_error(Request(scope), 500, message)
            except Exception:  # the error page itself failed (a broken template): plain text, still no traceback
                log.exception("the error page failed too, ref %s", ref)
                response = Response(message, status_code=500, media_type="text/plain")
            await response(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CSP)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "same-origin")
                if not is_static:
                    headers.setdefault("Cache-Control", "no-store")  # pages hold one user's data
            await send(message)

        await self.app(scope, receive, with_headers)


# -- login rate limit --------------------------------------------------------------------------------------------------

class LoginLimiter:
    """At most ``failures`` failed logins per (user name, client address) within ``window_s`` seconds; then a 429
    until the oldest failure leaves the window. In memory: one server process (``embedlab serve`` runs one)."""

    def __init__(self, failures: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.failures, self.window_s, self.clock = failures, window_s, clock
        self._seen: dict[tuple[str, str], collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> collections.deque[float]:
        times = self._seen.get(key)
        if times is None:
            return collections.deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._seen[key]
        return times

    def check(self, username: str, address: str) -> None:
        """TooManyRequests when the key has used up its failures."""
        key = (username.strip().lower(), address)
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if len(times) >= self.failures:
                retry = max(1, int(self.window_s - (now - times[0])) + 1)
                raise TooManyRequests(f"too many failed logins for this user; try again in {retry} s", retry)

    def failed(self, username: str, address: str) -> None:
        key = (username.strip().lower(), address)
        with self._lock:
            now = self.clock()
            self._recent(key, now)
            self._seen.setdefault(key, collections.deque()).append(now)
            if len(self._seen) > 100_000:  # a flood of made-up names: drop the stalest keys, not the server
                for stale in list(self._seen)[:50_000]:
                    del self._seen[stale]

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._seen.pop((username.strip().lower(), address), None)
