"""The embedlab web app: FastAPI pages (Jinja2 + HTMX) and a JSON API over the same functions as the CLI.

    from embedlab.web import WebConfig, create_app      # app.py: the app and how page modules register
    from embedlab.web.accounts import Accounts          # users, roles, ownership (also `embedlab users ...`)

``create_app`` and ``WebConfig`` are imported lazily, so ``embedlab users`` (which needs only accounts.py) does not
load FastAPI. docs/web.md describes the pages, the security model and the tests.
"""
from __future__ import annotations

__all__ = ["WebConfig", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "WebConfig":
        from .config import WebConfig

        return WebConfig
    raise AttributeError(name)
