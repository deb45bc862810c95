"""``embedlab serve`` (the web app) and ``embedlab users`` (its accounts, from the server's command line).

    embedlab users create-admin ada                 # the first admin: password from a prompt, asked twice
    echo "$PW" | embedlab users add bob --role researcher --password-stdin
    embedlab users list | set-role bob reviewer | disable bob | enable bob | set-password bob
    embedlab serve                                  # http://127.0.0.1:8000, SQLite store, jobs on a local Ray
    embedlab serve --db postgresql://host/lab --web-dir /srv/embedlab --executor ray --address ray://head:10001

Accounts live in the results store's database (``--db``, EMBEDLAB_RESULTS_DB), so ``users`` and ``serve`` must name
the same store. There is no default account and no default password: the login page of a server without accounts
says to run ``embedlab users create-admin``.

Binding: ``serve`` listens on 127.0.0.1 by default. Any other address (0.0.0.0, a LAN address) is refused unless
``--secure-cookies`` (a TLS-terminating proxy in front: the session cookie is sent over HTTPS only) or
``--insecure-cookies-ok`` (you accept that passwords and session cookies cross the network in clear, e.g. on a
closed lab network). Behind a proxy on the same machine keep 127.0.0.1 and pass ``--secure-cookies``.
"""
from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Optional

import typer

from ._common import _say, _table, console

app = typer.Typer()
users_app = typer.Typer(help="Web app accounts: create the first admin, add users, set roles, disable.",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")

_DB = typer.Option(None, "--db", help="results store URL or SQLite file (default: EMBEDLAB_RESULTS_DB); the "
                                      "accounts live in the same database")
_STDIN = typer.Option(False, "--password-stdin", help="read the password from the first line of stdin (scripts)")
_ROLES = "admin | researcher | reviewer"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    db: Optional[str] = _DB,
    web_dir: Optional[Path] = typer.Option(None, "--web-dir", help="uploads, projects and the generated session "
                                           "secret (default: EMBEDLAB_WEB_DIR, else runs/web)"),
    executor: str = typer.Option("auto", "--executor", help="what the job pages launch with: ray (a local Ray "
                                 "instance, or --address) | local (worker processes) | auto (ray when installed)"),
    address: Optional[str] = typer.Option(None, "--address", help="ray executor: cluster address"),
    demo_models: Optional[list[Path]] = typer.Option(None, "--demo-models", help="a model folder, or a folder of "
                                                      "them, the demo page offers (repeatable)"),
    max_upload_mb: int = typer.Option(256, "--max-upload-mb", min=1, help="request body limit, MiB"),
    secure_cookies: bool = typer.Option(False, "--secure-cookies", help="send the session cookie over HTTPS only "
                                        "(behind a TLS proxy)"),
    insecure_ok: bool = typer.Option(False, "--insecure-cookies-ok", help="allow a non-loopback --host without "
                                     "--secure-cookies (passwords and cookies travel in clear)"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Run the web app (pages + API at /docs) with uvicorn until Ctrl-C."""
    from ..errors import ConfigError

    if executor not in ("auto", "local", "ray"):
        raise ConfigError(f"--executor {executor!r}: the web app launches jobs with auto, local or ray")
    executor = resolve_executor(executor)
    if not _is_loopback(host) and not (secure_cookies or insecure_ok):
        raise ConfigError(f"--host {host} makes the app reachable from other machines over plain HTTP: put a TLS "
                          "proxy in front and pass --secure-cookies, or pass --insecure-cookies-ok to accept "
                          "passwords and session cookies in clear")
    import uvicorn

    from ..web.app import create_app
    from ..web.config import WebConfig, default_web_dir

    for folder in demo_models or []:
        if not folder.expanduser().is_dir():
            raise ConfigError(f"--demo-models {folder}: not a folder (a model folder, or a folder of them)")
    options = dict(web_dir=web_dir or default_web_dir(), executor=executor, ray_address=address,
                   demo_models=tuple(demo_models or ()),
                   max_upload_bytes=max_upload_mb * 1024 * 1024, secure_cookies=secure_cookies)
    config = WebConfig(db_url=db, **options) if db else WebConfig(**options)  # else: EMBEDLAB_RESULTS_DB / default
    web_app = create_app(config)
    if web_app.state.accounts.count_users() == 0:
        _say("no accounts yet: create the first admin with `embedlab users create-admin NAME` (same --db)")
    _say(f"embedlab web app on http://{host}:{port}  (store: {web_app.state.store.display_url}, "
         f"web folder: {config.web_dir}, jobs: {_executor_text(executor, address)})")
    # One worker: the login rate limiter is in memory. server_header off: no version banner for scanners.
    uvicorn.run(web_app, host=host, port=port, log_level=log_level, server_header=False, proxy_headers=True)


def resolve_executor(choice: str) -> str:
    """``auto``: Ray when it is installed (the job pages then run jobs on a local Ray instance started at the
    first launch, or on ``--address``), else local worker processes."""
    if choice != "auto":
        return choice
    import importlib.util

    return "ray" if importlib.util.find_spec("ray") is not None else "local"


def _executor_text(executor: str, address: str | None) -> str:
    if executor == "local":
        return "local worker processes"
    return f"Ray at {address}" if address else "a local Ray instance (started at the first launch)"


# -- users ---------------------------------------------------------------------------------------------------------

def _password(password_stdin: bool, prompt: str = "Password") -> str:
    if password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)


def _accounts(db: Optional[str]):
    from ..web.accounts import Accounts

    return Accounts.open(db)


@users_app.command("create-admin")
def create_admin(username: str = typer.Argument(..., help="the admin's user name"), db: Optional[str] = _DB,
                 password_stdin: bool = _STDIN) -> None:
    """Create an admin account (the first one, or another)."""
    _add(username, "admin", db, password_stdin)


@users_app.command("add")
def add(username: str = typer.Argument(...), role: str = typer.Option("researcher", "--role", help=_ROLES),
        db: Optional[str] = _DB, password_stdin: bool = _STDIN) -> None:
    """Add an account with a role."""
    _add(username, role, db, password_stdin)


def _add(username: str, role: str, db: Optional[str], password_stdin: bool) -> None:
    from ..web.accounts import check_role, normalise_username

    normalise_username(username)  # refuse a bad name or role before asking for a password
    check_role(role)
    password = _password(password_stdin)
    with _accounts(db) as accounts:
        user = accounts.create_user(username, password, role)
    _say(f"created {user.role} {user.username}")


@users_app.command("list")
def list_users(db: Optional[str] = _DB) -> None:
    """Every account: name, role, active, created."""
    with _accounts(db) as accounts:
        users = accounts.list_users()
    if not users:
        _say("no accounts yet: `embedlab users create-admin NAME` creates the first admin")
        return
    console.print(_table(f"{len(users)} account(s)", ["user", "role", "active", "created"],
                         [[u.username, u.role, "yes" if u.active else "no", u.created_at.strftime("%Y-%m-%d %H:%M")]
                          for u in users]))


@users_app.command("set-role")
def set_role(username: str = typer.Argument(...), role: str = typer.Argument(..., help=_ROLES),
             db: Optional[str] = _DB) -> None:
    """Change an account's role (the last active admin keeps theirs)."""
    with _accounts(db) as accounts:
        user = accounts.set_role(username, role)
    _say(f"{user.username} is now {user.role}")


@users_app.command("disable")
def disable(username: str = typer.Argument(...), db: Optional[str] = _DB) -> None:
    """Disable an account: its sessions end at their next request; nothing it owns is deleted."""
    with _accounts(db) as accounts:
        user = accounts.set_active(username, False)
    _say(f"{user.username} is disabled")


@users_app.command("enable")
def enable(username: str = typer.Argument(...), db: Optional[str] = _DB) -> None:
    """Enable a disabled account again."""
    with _accounts(db) as accounts:
        user = accounts.set_active(username, True)
    _say(f"{user.username} is enabled")


@users_app.command("set-password")
def set_password(username: str = typer.Argument(...), db: Optional[str] = _DB,
                 password_stdin: bool = _STDIN) -> None:
    """Set a new password for an account (e.g. a forgotten one); its sessions end."""
    password = _password(password_stdin, "New password")
    with _accounts(db) as accounts:
        user = accounts.set_password(username, password)
    _say(f"password of {user.username} changed")
