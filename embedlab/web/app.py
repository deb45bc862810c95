"""``create_app(config) -> FastAPI``: the embedlab web app (server-rendered pages + a JSON API), started by
``embedlab serve`` (embedlab/cli/serve.py) or any ASGI server:

    from embedlab.web import WebConfig, create_app
    app = create_app(WebConfig(db_url="sqlite:///lab.sqlite", web_dir="runs/web"))

What it sets up: the results store (opened, and migrated, at ``config.db_url``) with the accounts tables beside it,
the session-signing secret (config.py), the guards (security.py: body limit, signed-cookie sessions, CSRF on every
state-changing request, security headers, the error boundary), the error handlers (render.py), /static (app.css,
app.js and the vendored HTMX / Vega / Swagger UI in static/vendor, see VERSIONS.txt), and the page modules.

How a page group registers itself (one module per group, e.g. ``routes_jobs.py``):

1. In ``embedlab/web/routes_<group>.py`` define ``router = APIRouter()`` with its pages and its /api/ endpoints,
   and ``NAV = [NavItem("Jobs", "/jobs", "Launch and watch runs.", roles=("researcher",))]`` (its top-bar links and
   home-page cards; [] for none). Templates go in ``templates/<group>/``, extending ``base.html``.
2. Use the dependencies of deps.py (CurrentUser, require_role(...), AccountsDep, StoreDep, ConfigDep), the
   ownership checks of Accounts (own / require_owner / owned_ids), and render / redirect / flash of render.py.
   Raise NotFound / Forbidden / AccountError (errors.py) or any EmbedlabError for a refusal the user should read.
3. That is all: every ``routes_*.py`` module of this package is a page group (``page_modules()``, in name order;
   the nav items' ``order`` sorts the bar). Test it in tests/test_web_<group>.py.

Forms need nothing for CSRF beyond ``<input type="hidden" name="csrf_token" value="{{ csrf_token }}">`` as the
form's first field; HTMX requests carry the header from base.html. What the pages call (jobs, the store, the
domains' public functions) is the same as the CLI calls; the app holds no logic the CLI lacks.
"""
from __future__ import annotations

import importlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..bench.store import ResultsStore
from .accounts import Accounts
from .config import WebConfig
from .render import STATIC, NavItem, error_response, install_error_handlers
from .security import BodyLimit, CSRFMiddleware, ErrorBoundary, LoginLimiter, SecurityHeaders

log = logging.getLogger("embedlab.web")

def swagger_ui_dir():
    """The folder of Swagger UI's files (swagger-ui-bundle.js, swagger-ui.css) from the fastapi-offline package."""
    from importlib.resources import files

    return files("fastapi_offline") / "static"


def page_modules() -> tuple[str, ...]:
    """The page groups: every ``routes_*`` module of this package, in name order (a new group needs no edit here;
    each NavItem's ``order`` sorts the bar)."""
    import pkgutil
    from pathlib import Path

    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                        if m.name.startswith("routes_")))


PAGE_MODULES = page_modules()
SESSION_COOKIE = "embedlab_session"


def create_app(config: WebConfig | None = None) -> FastAPI:
    config = config or WebConfig()
    secret = config.secret()  # first: a bad or unreadable secret fails before the database is touched
    config.web_dir.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(config.db_url)
    accounts = Accounts(store.engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if accounts.count_users() == 0:
            log.warning("no web accounts yet: create the first admin with `embedlab users create-admin NAME`")
        yield
        store.close()

    app = FastAPI(title="embedlab", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="The embedlab web app's API. Sign in through /login (the session cookie is the "
                              "credential); send the X-CSRF-Token header from GET /api/me with every POST, PUT, "
                              "PATCH and DELETE.")
    app.state.config = config
    app.state.store = store
    app.state.accounts = accounts
    app.state.login_limiter = LoginLimiter(config.login_failures, config.login_window_s)
    app.state.nav: list[NavItem] = []

    install_error_handlers(app)
    for name in PAGE_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        app.include_router(module.router)
        app.state.nav.extend(module.NAV)
    # Swagger UI (the /docs page) is served from the files the fastapi-offline package (PyPI) ships, not from a
    # committed copy: its 1.5 MB bundle does not belong in the repository (Swagger UI 5: FastAPI's OpenAPI 3.1)
    app.mount("/static/swagger-ui", StaticFiles(directory=str(swagger_ui_dir())), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # add_middleware puts each one outside the ones before it: the last added runs first (see security.py).
    app.add_middleware(CSRFMiddleware, render_error=error_response)
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                       max_age=config.session_max_age_s, same_site="lax", https_only=config.secure_cookies)
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes, render_error=error_response)
    app.add_middleware(ErrorBoundary, render_error=error_response)
    app.add_middleware(SecurityHeaders)
    return app
