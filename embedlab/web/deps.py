"""FastAPI dependencies for page modules: who is signed in, what their role allows, and the app's shared objects.

    @router.get("/jobs")
    def jobs_page(request: Request, user: CurrentUser, accounts: AccountsDep): ...        # any signed-in user

    @router.post("/jobs/{job_id}/cancel")
    def cancel(request: Request, job_id: str, user: Annotated[User, Depends(require_role("researcher"))],
               accounts: AccountsDep):
        accounts.require_owner("job", job_id, user)     # 404 for another user's job (admins pass)
        ...

- ``current_user``: the signed-in User, else LoginRequired (a page request is sent to the login page, the API gets
  401). The session cookie holds the user id and the account's session_version: a disabled account, a changed
  password or a deleted user ends the session at its next request (the cookie is cleared).
- ``optional_user``: the same, or None.
- ``require_role("researcher", "reviewer")``: the user if their role is listed, else Forbidden (403). Admins pass
  every role check (they run the lab's server; ownership checks are separate: ``Accounts.require_owner``).
- ``get_accounts`` / ``get_store`` / ``get_config``: the Accounts, ResultsStore and WebConfig the app was created
  with. ``Annotated`` aliases: CurrentUser, OptionalUser, AdminUser, AccountsDep, StoreDep, ConfigDep.

CSRF is not a dependency: security.CSRFMiddleware checks every state-changing request before any route runs.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Callable

from fastapi import Depends, Request

from ..bench.store import ResultsStore
from .accounts import ROLES, Accounts, User
from .config import WebConfig
from .errors import Forbidden, LoginRequired

SESSION_USER = "uid"
SESSION_VERSION = "sv"


def get_accounts(request: Request) -> Accounts:
    return request.app.state.accounts


def get_store(request: Request) -> ResultsStore:
    return request.app.state.store


def get_config(request: Request) -> WebConfig:
    return request.app.state.config


def session_user(request: Request) -> User | None:
    """The user the session cookie names, if the account is still active and the session is not older than its
    last password change or disable; otherwise the session is cleared and None returned."""
    session = request.session
    uid = session.get(SESSION_USER)
    if uid is None:
        return None
    user = get_accounts(request).get(uid) if isinstance(uid, int) else None
    if user is None or not user.active or session.get(SESSION_VERSION) != user.session_version:
        session.clear()
        return None
    return user


def optional_user(request: Request) -> User | None:
    user = session_user(request)
    request.state.user = user  # for render(): the nav and the account menu
    return user


def current_user(request: Request) -> User:
    user = optional_user(request)
    if user is None:
        raise LoginRequired("please log in first")
    return user


@lru_cache(maxsize=None)  # one dependency per role set: FastAPI then runs it once per request
def require_role(*roles: str) -> Callable[..., User]:
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"require_role: unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")

    def dependency(user: Annotated[User, Depends(current_user)]) -> User:
        if not (user.is_admin or user.role in roles):
            raise Forbidden(f"this needs a{'n' if roles[0][0] in 'aeiou' else ''} {' or '.join(roles)} account; "
                            f"you are signed in as {user.username} ({user.role})")
        return user

    dependency.__name__ = f"require_role_{'_'.join(roles)}"
    return dependency


CurrentUser = Annotated[User, Depends(current_user)]
OptionalUser = Annotated[User | None, Depends(optional_user)]
AdminUser = Annotated[User, Depends(require_role("admin"))]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]
StoreDep = Annotated[ResultsStore, Depends(get_store)]
ConfigDep = Annotated[WebConfig, Depends(get_config)]
