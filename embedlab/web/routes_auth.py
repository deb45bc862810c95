"""Signing in and out, and the user's own account: /login, /logout, /me, /me/password, GET /api/me.

Login: the user name and password are checked by Accounts.authenticate (argon2); a wrong password, an unknown name
and a disabled account get the same answer. Failures are limited per user name + client address
(security.LoginLimiter; 429 with Retry-After). A successful login replaces the whole session (new CSRF token, no
session fixation) and goes to ``next`` only when it is a path of this site (never an open redirect). When no account
exists yet the login page says how to create the first admin from the command line; there is no default account.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from .deps import SESSION_USER, SESSION_VERSION, AccountsDep, CurrentUser, OptionalUser
from .errors import AccountError, TooManyRequests
from .render import NavItem, redirect, render
from .security import csrf_token, new_session

router = APIRouter()
NAV = [NavItem("My account", "/me", "Change your password.", order=900)]


def _safe_next(target: str | None) -> str:
    """Only a path on this site: "/jobs?x=1" yes; "//evil.example", "https://...", "/\\evil" no."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target \
            or any(c in target for c in "\r\n"):
        return "/"
    return target


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/login", include_in_schema=False)
def login_page(request: Request, user: OptionalUser, accounts: AccountsDep, next: str = "/") -> Response:
    if user is not None:
        return redirect(request, _safe_next(next))
    return render(request, "login.html", {"next": _safe_next(next), "no_users": accounts.count_users() == 0,
                                          "error": None, "username": ""})


@router.post("/login", include_in_schema=False)
def login(request: Request, accounts: AccountsDep, username: Annotated[str, Form(max_length=200)] = "",
          password: Annotated[str, Form(max_length=4096)] = "", next: Annotated[str, Form()] = "/") -> Response:
    limiter = request.app.state.login_limiter
    address = _client(request)
    target = _safe_next(next)

    def again(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
        return render(request, "login.html", {"next": target, "no_users": accounts.count_users() == 0,
                                              "error": message, "username": username}, status, headers)

    try:
        limiter.check(username, address)
    except TooManyRequests as e:
        return again(str(e), 429, {"Retry-After": str(e.retry_after)})
    user = accounts.authenticate(username, password)
    if user is None:
        limiter.failed(username, address)
        return again("Wrong user name or password (or the account is disabled).", 401)
    limiter.succeeded(username, address)
    new_session(request, **{SESSION_USER: user.id, SESSION_VERSION: user.session_version})
    return redirect(request, target, f"Signed in as {user.username}.", "success")


@router.post("/logout", include_in_schema=False)
def logout(request: Request) -> Response:
    request.session.clear()
    return redirect(request, "/login", "You are signed out.")


@router.get("/me", include_in_schema=False)
def me_page(request: Request, user: CurrentUser) -> Response:
    return render(request, "me.html", {})


@router.post("/me/password", include_in_schema=False)
def change_password(request: Request, user: CurrentUser, accounts: AccountsDep,
                    old_password: Annotated[str, Form(max_length=4096)],
                    new_password: Annotated[str, Form(max_length=4096)],
                    new_password_again: Annotated[str, Form(max_length=4096)]) -> Response:
    if new_password != new_password_again:
        return redirect(request, "/me", "The two new passwords differ.", "error")
    try:
        updated = accounts.change_password(user.id, old_password, new_password)
    except AccountError as e:
        return redirect(request, "/me", str(e), "error")
    # Every other session of this user ends (their session_version is old); this one continues.
    request.session[SESSION_VERSION] = updated.session_version
    return redirect(request, "/me", "Password changed. Your other sessions are signed out.", "success")


@router.get("/api/me", tags=["account"], summary="The signed-in user and their CSRF token")
def api_me(request: Request, user: CurrentUser) -> dict:
    """The signed-in user, and the CSRF token to send as X-CSRF-Token with POST/PUT/PATCH/DELETE requests."""
    return {**user.public(), "csrf_token": csrf_token(request)}
