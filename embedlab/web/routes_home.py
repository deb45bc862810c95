"""The home page (what the signed-in user can do, by role: the NavItems of every page module), the health check
``GET /api/health`` and the API documentation at /docs (Swagger UI from the fastapi-offline package's files, no
CDN)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import JSONResponse, Response

from .. import __version__
from .deps import CurrentUser, StoreDep
from .render import render

router = APIRouter()
NAV: list = []  # the home page is the brand link, not a nav entry


@router.get("/", include_in_schema=False)
def home(request: Request, user: CurrentUser) -> Response:
    return render(request, "home.html", {})


@router.get("/api/health", tags=["system"], summary="Health check")
def health(store: StoreDep) -> Response:
    """200 ``{"status": "ok"}`` when the database answers, else 503. Needs no login (for load balancers)."""
    try:
        with store.engine.connect() as conn:
            conn.execute(select(1))
    except Exception:
        return JSONResponse({"status": "unavailable", "version": __version__}, status_code=503)
    return JSONResponse({"status": "ok", "version": __version__})


@router.get("/docs", include_in_schema=False)
def api_docs(request: Request) -> Response:
    return render(request, "docs.html", {})
