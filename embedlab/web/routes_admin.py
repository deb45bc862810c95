"""User management for admins: the /admin/users page (list, add with a role, change a role, disable / enable) and
the same through the API (GET/POST /api/users, PATCH /api/users/{id}); ``embedlab users ...`` does it from the CLI.

Refusals (a bad name, a short password, the last admin, your own account) come back as a flash message on the page,
a JSON ``{"error": ...}`` for HTMX and the API. The role and active forms are plain POST forms that also carry
``hx-post``: with HTMX the changed table row is swapped in place, without it the page is reloaded.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from .accounts import ROLES, User
from .deps import AccountsDep, AdminUser
from .errors import AccountError, NotFound
from .render import NavItem, is_htmx, redirect, render

router = APIRouter()
NAV = [NavItem("Users", "/admin/users", "Add users, set their roles, disable accounts.", roles=("admin",),
               order=800)]

Role = Literal["admin", "researcher", "reviewer"]


def _users_page(request: Request, accounts, status: int = 200) -> Response:
    return render(request, "admin/users.html", {"users": accounts.list_users(), "roles": ROLES}, status)


@router.get("/admin/users", include_in_schema=False)
def users_page(request: Request, admin: AdminUser, accounts: AccountsDep) -> Response:
    return _users_page(request, accounts)


@router.post("/admin/users", include_in_schema=False)
def add_user(request: Request, admin: AdminUser, accounts: AccountsDep,
             username: Annotated[str, Form(max_length=200)], role: Annotated[Role, Form()],
             password: Annotated[str, Form(max_length=4096)],
             password_again: Annotated[str, Form(max_length=4096)]) -> Response:
    if password != password_again:
        return redirect(request, "/admin/users", "The two passwords differ.", "error")
    try:
        user = accounts.create_user(username, password, role)
    except AccountError as e:
        return redirect(request, "/admin/users", str(e), "error")
    return redirect(request, "/admin/users", f"Added {user.username} ({user.role}).", "success")


def _changed(request: Request, user: User | AccountError, message: str) -> Response:
    if isinstance(user, AccountError):
        if is_htmx(request):
            return JSONResponse({"error": str(user)}, status_code=400)
        return redirect(request, "/admin/users", str(user), "error")
    if is_htmx(request):
        return render(request, "admin/_user_row.html", {"u": user, "roles": ROLES})
    return redirect(request, "/admin/users", message, "success")


@router.post("/admin/users/{user_id}/role", include_in_schema=False)
def change_role(request: Request, user_id: int, admin: AdminUser, accounts: AccountsDep,
                role: Annotated[Role, Form()]) -> Response:
    try:
        user = accounts.set_role(user_id, role)
    except AccountError as e:
        return _changed(request, e, "")
    return _changed(request, user, f"{user.username} is now {user.role}.")


@router.post("/admin/users/{user_id}/active", include_in_schema=False)
def change_active(request: Request, user_id: int, admin: AdminUser, accounts: AccountsDep,
                  active: Annotated[bool, Form()]) -> Response:
    try:
        if user_id == admin.id and not active:
            raise AccountError("you cannot disable your own account")
        user = accounts.set_active(user_id, active)
    except AccountError as e:
        return _changed(request, e, "")
    return _changed(request, user, f"{user.username} is {'enabled' if user.active else 'disabled'}.")


class NewUser(BaseModel):
    username: str = Field(max_length=200)
    role: Role = "researcher"
    password: str = Field(max_length=4096)


class UserChange(BaseModel):
    role: Role | None = None
    active: bool | None = None


@router.get("/api/users", tags=["users"], summary="List accounts")
def api_users(admin: AdminUser, accounts: AccountsDep) -> list[dict]:
    """Every account (admins only)."""
    return [u.public() for u in accounts.list_users()]


@router.post("/api/users", tags=["users"], status_code=201, summary="Add an account")
def api_add_user(body: NewUser, admin: AdminUser, accounts: AccountsDep) -> dict:
    """Add an account (admins only); 400 with ``{"error": ...}`` for a bad name, password or a taken name."""
    return accounts.create_user(body.username, body.password, body.role).public()


@router.patch("/api/users/{user_id}", tags=["users"], summary="Change an account's role or active flag")
def api_change_user(user_id: int, body: UserChange, admin: AdminUser, accounts: AccountsDep) -> dict:
    """Change an account's role and/or active flag (admins only)."""
    if body.active is False and user_id == admin.id:
        raise AccountError("you cannot disable your own account")
    if accounts.get(user_id) is None:
        raise NotFound(f"no user {user_id}")
    if body.role is not None:
        accounts.set_role(user_id, body.role)
    if body.active is not None:
        accounts.set_active(user_id, body.active)
    return accounts.get(user_id).public()
