"""The web app's user-facing errors: each an ``EmbedlabError`` with the HTTP status the page or API answers with.

    raise NotFound("no such upload")            # 404: also what another user's object looks like (never 403)
    raise Forbidden("reviewers cannot launch jobs")
    raise AccountError("password too short")    # 400, from embedlab.web.accounts (the CLI prints it as one line)

Any other ``EmbedlabError`` raised by a page (a ConfigError from bench, a DataError from a domain) is shown as a 400
with its message. The handlers that turn these into an HTML page or ``{"error": ...}`` JSON are in render.py; this
module imports no web framework, so the CLI (``embedlab users ...``) can use the account errors without FastAPI.
"""
from __future__ import annotations

import secrets

from ..errors import EmbedlabError


class WebError(EmbedlabError):
    """A refusal the user can understand; ``status_code`` is the HTTP status it is answered with."""

    status_code = 400


class AccountError(WebError):
    """A user name, password or role is invalid, or the account change is not allowed (e.g. the last admin)."""


class NotFound(WebError):
    """The object does not exist, or belongs to another user (both look the same, so ids cannot be probed)."""

    status_code = 404


class Forbidden(WebError):
    """The signed-in user's role does not allow this (or the CSRF token is missing or wrong)."""

    status_code = 403


class LoginRequired(WebError):
    """No valid session: pages redirect to the login page, the API answers 401."""

    status_code = 401


class TooManyRequests(WebError):
    """Too many failed logins for this user name from this address; ``retry_after`` seconds until the next try."""

    status_code = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class PayloadTooLarge(WebError):
    """The request body is over the configured limit (counted while it streams in, not after)."""

    status_code = 413


def status_of(error: EmbedlabError) -> int:
    """The HTTP status an EmbedlabError is answered with: its own for WebErrors, 400 for the rest (bad input)."""
    return getattr(error, "status_code", 400)


def reference_id() -> str:
    """A short id printed on the generic error page and in the server log next to the traceback, so a user's report
    ("error ref 4f9c2a1b") finds the traceback without the page ever showing it."""
    return secrets.token_hex(4)
