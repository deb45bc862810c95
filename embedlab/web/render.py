"""Rendering for page modules: templates, flash messages, redirects, the nav, and the error pages / JSON errors.

    return render(request, "jobs/list.html", {"jobs": rows})           # a page (base.html: nav, flashes, CSRF)
    return render(request, "jobs/_row.html", {"job": job})             # an HTMX partial (a template without base)
    return redirect(request, "/jobs", "job cancelled", "success")      # POST-redirect-GET with a flash message
    if is_htmx(request): ...                                           # answer an hx-post with a partial

Every template gets ``request``, ``user`` (or None), ``csrf_token``, ``get_flashes()`` (pops the pending flash
messages; base.html shows them), ``nav`` (the NavItems the user's
role may see), ``version`` and ``static_version``. Templates live in embedlab/web/templates/ (a page group's own in
a sub-folder named after it); autoescaping is on for all of them.

Errors: ``error_response`` answers a refusal as an HTML page, or as ``{"error": message}`` JSON for /api/ paths and
HTMX requests (static/app.js shows that message in the page's flash area). ``install_error_handlers`` maps the
exceptions a page may raise: any EmbedlabError (embedlab.web.errors gives the status; others are 400), Starlette's
HTTPException (404, 405, 413 ...), FastAPI's validation errors (422, each field named). LoginRequired sends a page
request to the login page. Unexpected exceptions never reach these: security.ErrorBoundary logs them and shows a
reference id.
"""
from __future__ import annotations

import http
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .. import __version__
from ..errors import EmbedlabError
from .accounts import ROLES, User
from .errors import LoginRequired, TooManyRequests, status_of
from .security import csrf_token

log = logging.getLogger("embedlab.web")

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")
FLASH_KEY = "_flash"
_UNSET = object()

env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class NavItem:
    """A link in the top bar and a card on the home page, for the roles listed (admins see every item)."""

    label: str
    href: str
    description: str = ""
    roles: tuple[str, ...] = field(default=ROLES)
    order: int = 100

    def visible_to(self, user: User | None) -> bool:
        return user is not None and (user.is_admin or user.role in self.roles)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def wants_json(request: Request) -> bool:
    """API paths and HTMX requests get JSON errors; everything else an HTML page."""
    return request.url.path.startswith("/api/") or is_htmx(request)


def flash(request: Request, message: str, category: str = "info") -> None:
    """A message shown once, on the next page rendered (category: info, success, error)."""
    request.session.setdefault(FLASH_KEY, [])
    request.session[FLASH_KEY] = [*request.session[FLASH_KEY], {"message": str(message), "category": category}]


def redirect(request: Request, url: str, message: str | None = None, category: str = "info") -> RedirectResponse:
    """303 to ``url`` (a path of this app) with an optional flash message: the end of every form POST."""
    if message:
        flash(request, message, category)
    return RedirectResponse(url, status_code=303)


def _user_of(request: Request) -> User | None:
    known = getattr(request.state, "user", _UNSET)  # set by deps.optional_user / current_user
    if known is not _UNSET:
        return known
    if "session" not in request.scope:  # an error raised before the session middleware ran
        return None
    from .deps import session_user

    try:
        return session_user(request)
    except Exception:  # an error page must not fail because the database is what failed
        log.debug("no user for the error page", exc_info=True)
        return None


def context(request: Request, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    user = _user_of(request)
    has_session = "session" in request.scope
    nav = sorted((n for n in getattr(request.app.state, "nav", ()) if n.visible_to(user)),
                 key=lambda n: (n.order, n.label))
    return {
        "request": request,
        "user": user,
        "csrf_token": csrf_token(request) if has_session else "",
        # Called by base.html only: an HTMX partial (no base) leaves pending messages for the next full page.
        "get_flashes": (lambda: request.session.pop(FLASH_KEY, [])) if has_session else (lambda: []),
        "nav": nav,
        "version": __version__,
        "static_version": __version__,
        **(extra or {}),
    }


def render(request: Request, template: str, extra: dict[str, Any] | None = None, status_code: int = 200,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    """The template rendered with the common context (see the module docstring) plus ``extra``."""
    html = env.get_template(template).render(context(request, extra))
    return HTMLResponse(html, status_code=status_code, headers=headers)


async def error_response(request: Request, status: int, message: str,
                         headers: dict[str, str] | None = None) -> Response:
    """A refusal as JSON (API, HTMX) or as the error page; never more than ``message``."""
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return await run_in_threadpool(render, request, "error.html", {"status": status, "title": title,
                                                                    "message": message}, status, headers)


def _validation_message(errors: list[dict]) -> tuple[str, list[dict[str, str]]]:
    details = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "form", "header", "cookie")]
        details.append({"field": ".".join(loc) or "request", "message": str(e.get("msg", "invalid"))})
    text = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return f"invalid input: {text}", details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EmbedlabError)
    async def embedlab_error(request: Request, exc: EmbedlabError) -> Response:
        status = status_of(exc)
        if isinstance(exc, LoginRequired) and not wants_json(request) and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        return await error_response(request, status, str(exc), headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404 and (not detail or detail == "Not Found"):
            detail = f"page not found: {request.url.path}"
        elif exc.status_code == 405 and (not detail or detail == "Method Not Allowed"):
            detail = f"{request.method} is not allowed on {request.url.path}"
        message = detail or http.HTTPStatus(exc.status_code).phrase
        return await error_response(request, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        message, details = _validation_message(list(exc.errors()))
        if wants_json(request):
            return JSONResponse({"error": message, "details": details}, status_code=422)
        return await error_response(request, 422, message)
