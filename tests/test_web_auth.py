"""The web app's foundation through FastAPI's TestClient: accounts, login / logout, sessions, roles, CSRF, rate limit,
body limit, error pages, the admin and "me" pages, the JSON API, ownership, the session secret, the `embedlab users`
and `embedlab serve` commands, and one run on PostgreSQL. Every endpoint of routes_*.py is called here, with its
refusals."""
from __future__ import annotations

import logging
import os
import stat
import uuid

import pytest
import typer
from argon2 import PasswordHasher
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from terminal import sigint_as_at_a_terminal
from web_server import SECRET, api_token, csrf_from, fast_hasher, login, make_app, signed_in

from embedlab.errors import ConfigError
from embedlab.web import WebConfig, create_app
from embedlab.web.accounts import Accounts
from embedlab.web.errors import AccountError, NotFound
from embedlab.web.security import LoginLimiter

PW = "correct horse battery"
PW2 = "another long secret"


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def admin_client(app):
    app.state.accounts.create_user("ada", PW, "admin")
    return signed_in(app, "ada", PW)


def _add(app, name: str, role: str):
    return app.state.accounts.create_user(name, PW, role)


# -- startup, login, logout ------------------------------------------------------------------------------------------

def test_no_default_account_after_startup(app):
    assert app.state.accounts.count_users() == 0
    client = TestClient(app)
    page = client.get("/login")
    assert page.status_code == 200 and "embedlab users create-admin" in page.text and 'id="no-users"' in page.text
    for name, password in (("admin", "admin"), ("admin", "password"), ("root", "root"), ("admin", "")):
        assert login(client, name, password).status_code == 401
    assert client.get("/api/me").status_code == 401


def test_login_home_logout(app):
    _add(app, "ada", "admin")
    client = TestClient(app)
    assert "no-users" not in client.get("/login").text
    r = login(client, "ADA ", PW)  # names are case-insensitive, trimmed
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    home = client.get("/")
    assert home.status_code == 200 and "Welcome, ada" in home.text and "Signed in as ada" in home.text
    assert 'href="/admin/users"' in home.text  # the admin's card
    assert client.get("/login", follow_redirects=False).headers["location"] == "/"  # already signed in
    assert client.get("/me").status_code == 200
    token = csrf_from(home.text)
    out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/api/me").status_code == 401
    back = client.get("/", follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == "/login?next=/"


def test_login_goes_to_next_but_never_off_site(app):
    _add(app, "ada", "admin")
    r = TestClient(app).get("/admin/users?x=1", follow_redirects=False)
    assert r.headers["location"] == "/login?next=/admin/users%3Fx%3D1"
    assert login(TestClient(app), "ada", PW, next="/admin/users?x=1").headers["location"] == "/admin/users?x=1"
    for evil in ("//evil.example/x", "https://evil.example", "/\\evil.example", "javascript:alert(1)", ""):
        assert login(TestClient(app), "ada", PW, next=evil).headers["location"] == "/"


def test_wrong_password_unknown_user_and_disabled_user_are_refused_alike(app):
    _add(app, "ada", "admin")
    _add(app, "bob", "researcher")
    app.state.accounts.set_active("bob", False)
    for name, password in (("ada", "wrong password!"), ("nobody", PW), ("bob", PW), ("x" * 300, PW),
                           ("ada", "y" * 5000)):
        client = TestClient(app)
        r = login(client, name, password)
        if len(name) + len(password) < 200:
            assert r.status_code == 401 and "Wrong user name or password" in r.text
        else:
            assert r.status_code == 422 and "Traceback" not in r.text  # over-long fields: refused, never a 500
        assert client.get("/api/me").status_code == 401  # still nobody


def test_a_disabled_user_is_signed_out_at_the_next_request(app):
    _add(app, "ada", "admin")
    bob = _add(app, "bob", "researcher")
    client = signed_in(app, "bob", PW)
    assert client.get("/api/me").json()["username"] == "bob"
    app.state.accounts.set_active(bob.id, False)
    assert client.get("/api/me").status_code == 401
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    app.state.accounts.set_active(bob.id, True)
    assert client.get("/api/me").status_code == 401  # the old session stays dead; a new login works
    assert login(client, "bob", PW).status_code == 303


def test_a_tampered_session_cookie_is_a_signed_out_visitor(app):
    _add(app, "ada", "admin")
    client = signed_in(app, "ada", PW)
    value = client.cookies.get("embedlab_session")
    assert client.get("/api/me").status_code == 200
    client.cookies.clear()
    client.cookies.set("embedlab_session", value)
    assert client.get("/api/me").status_code == 200  # the untouched cookie, set the way the forged ones are
    payload, rest = value.split(".", 1)
    # Another user id in the payload with the old signature: the signature no longer matches.
    import base64
    import json
    data = json.loads(base64.b64decode(payload + "=="))
    data["uid"] = 999
    forged = base64.b64encode(json.dumps(data).encode()).decode().rstrip("=")
    for bad in (forged + "." + rest, value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"), "garbage"):
        client.cookies.clear()
        client.cookies.set("embedlab_session", bad)
        assert client.get("/api/me").status_code == 401
        assert client.get("/", follow_redirects=False).status_code == 303
    # A cookie signed with another server's secret is refused too.
    other = make_app(app.state.config.web_dir.parent / "other", secret_key="another-" + "z" * 40)
    other.state.accounts.create_user("ada", PW, "admin")
    stranger = signed_in(other, "ada", PW)
    client.cookies.clear()
    client.cookies.set("embedlab_session", stranger.cookies.get("embedlab_session"))
    assert client.get("/api/me").status_code == 401


# -- roles ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["researcher", "reviewer"])
def test_only_admins_open_the_admin_pages_and_api(app, role):
    _add(app, "ada", "admin")
    target = _add(app, "carl", "reviewer")
    _add(app, "eve", role)
    client = signed_in(app, "eve", PW)
    headers = api_token(client)
    token = headers["X-CSRF-Token"]
    page = client.get("/admin/users")
    assert page.status_code == 403 and "needs an admin account" in page.text and "Traceback" not in page.text
    assert client.get("/api/users").status_code == 403
    assert client.get("/api/users").json()["error"].startswith("this needs an admin account")
    assert client.post("/api/users", json={"username": "x1", "password": PW, "role": "admin"},
                       headers=headers).status_code == 403
    assert client.patch(f"/api/users/{target.id}", json={"role": "admin"}, headers=headers).status_code == 403
    for path, data in (("/admin/users", {"username": "x2", "role": "admin", "password": PW, "password_again": PW}),
                       (f"/admin/users/{target.id}/role", {"role": "admin"}),
                       (f"/admin/users/{target.id}/active", {"active": "false"})):
        assert client.post(path, data={"csrf_token": token, **data}).status_code == 403
    assert [u.username for u in app.state.accounts.list_users()] == ["ada", "carl", "eve"]
    assert app.state.accounts.get(target.id).role == "reviewer" and app.state.accounts.get(target.id).active
    home = client.get("/").text
    assert 'href="/admin/users"' not in home and 'href="/me"' in home  # the nav follows the role


# -- CSRF ----------------------------------------------------------------------------------------------------------

def test_csrf_is_required_on_every_state_changing_request(app):
    _add(app, "ada", "admin")
    client = signed_in(app, "ada", PW)
    good = api_token(client)["X-CSRF-Token"]
    user = {"username": "newbie", "password": PW, "role": "reviewer"}
    form = {"username": "newbie", "role": "reviewer", "password": PW, "password_again": PW}
    refusals = [
        client.post("/admin/users", data=form),                                       # form, no token
        client.post("/admin/users", data={**form, "csrf_token": "wrong"}),            # form, wrong token
        client.post("/admin/users", files={"f": ("a.txt", b"x")}, data=form),         # multipart, no token
        client.post("/admin/users", files={"f": ("a.txt", b"x")}, data={**form, "csrf_token": "nope"}),
        client.post("/api/users", json=user),                                         # API, no header
        client.post("/api/users", json=user, headers={"X-CSRF-Token": "wrong"}),      # API, wrong header
        client.patch("/api/users/1", json={"role": "reviewer"}),
        client.put("/api/users/1", json={}),
        client.delete("/api/users/1"),
        client.post("/api/users", content=b"csrf_token=" + good.encode(),              # a token in the body does
                    headers={"content-type": "application/json"}),                     # not count for JSON
    ]
    for r in refusals:
        assert r.status_code == 403, r.text
        assert "CSRF check failed" in r.text
    assert refusals[0].headers["content-type"].startswith("text/html")
    assert refusals[4].json()["error"].startswith("CSRF check failed")
    assert app.state.accounts.get_by_name("newbie") is None
    # logout too: a forged logout must not sign the user out
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/api/me").status_code == 200
    # the login form as well (login CSRF): a session-less POST has no token to match
    assert TestClient(app).post("/login", data={"username": "ada", "password": PW}).status_code == 403
    # and the right token passes, in each of its three places
    assert client.post("/api/users", json=user, headers={"X-CSRF-Token": good}).status_code == 201
    ok = client.post("/admin/users", data={**form, "username": "second", "csrf_token": good}, follow_redirects=False)
    assert ok.status_code == 303
    ok = client.post("/admin/users", files={"f": ("a.txt", b"x" * 5000)}, follow_redirects=False,
                     data={"csrf_token": good, **form, "username": "third"})
    assert ok.status_code == 303  # the multipart body, scanned for the token, reaches the route intact
    assert {"newbie", "second", "third"} <= {u.username for u in app.state.accounts.list_users()}


def test_a_token_of_another_session_is_refused(app):
    _add(app, "ada", "admin")
    _add(app, "bob", "researcher")
    ada, bob = signed_in(app, "ada", PW), signed_in(app, "bob", PW)
    bobs = api_token(bob)
    r = ada.post("/api/users", json={"username": "zed", "password": PW}, headers=bobs)
    assert r.status_code == 403


# -- rate limit ------------------------------------------------------------------------------------------------------

def test_failed_logins_are_rate_limited_per_user_and_address(app):
    _add(app, "ada", "admin")
    _add(app, "bob", "researcher")
    now = [1000.0]
    app.state.login_limiter = LoginLimiter(5, 60, clock=lambda: now[0])
    client = TestClient(app)
    for _ in range(5):
        assert login(client, "ada", "wrong password").status_code == 401
    blocked = login(client, "ada", PW)  # even the right password, until the window passes
    assert blocked.status_code == 429 and "too many failed logins" in blocked.text
    assert 1 <= int(blocked.headers["retry-after"]) <= 61
    assert login(client, "Ada", "wrong password").status_code == 429  # the same name, however written
    assert login(TestClient(app), "bob", PW).status_code == 303  # another user name is not affected
    now[0] += 61
    assert login(client, "ada", PW).status_code == 303
    # a success clears the count
    for _ in range(4):
        login(TestClient(app), "bob", "wrong password")
    assert login(TestClient(app), "bob", PW).status_code == 303
    assert login(TestClient(app), "bob", "wrong password").status_code == 401


# -- body limit and error pages -----------------------------------------------------------------------------------

def _test_routes(app) -> None:
    """Routes that exist only in these tests: an upload that streams, and failures of each kind."""
    router = APIRouter()

    @router.post("/test/upload")
    async def upload(request: Request):
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return {"bytes": n}

    @router.get("/test/boom")
    def boom():
        raise RuntimeError("secret internal detail /srv/db password=hunter2")

    @router.get("/api/test/boom")
    def api_boom():
        raise KeyError("internal")

    @router.get("/test/user-error")
    def user_error():
        raise ConfigError("the recipe names an unknown loss 'foo'")

    @router.get("/test/not-found")
    def not_found():
        raise NotFound("no such job abc")

    app.include_router(router)


def test_request_bodies_over_the_limit_are_refused_while_streaming(tmp_path):
    app = make_app(tmp_path, max_upload_bytes=10_000)
    _test_routes(app)
    app.state.accounts.create_user("ada", PW, "admin")
    client = signed_in(app, "ada", PW)
    headers = api_token(client)
    assert client.post("/test/upload", content=b"x" * 9_000, headers=headers).json() == {"bytes": 9_000}
    declared = client.post("/test/upload", content=b"x" * 20_000, headers=headers)
    assert declared.status_code == 413 and "request body too large" in declared.text and "9.8 KiB" in declared.text
    chunked = client.post("/test/upload", content=(b"y" * 1000 for _ in range(30)), headers=headers)
    assert chunked.status_code == 413  # no Content-Length: counted as it arrives
    # Straight through ASGI, to see how much of a chunked body is read before the refusal.
    pulled, sent = [], []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"y" * 1000, "more_body": len(pulled) < 100}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/test/upload", "raw_path": b"/test/upload",
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "server": ("testserver", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"host", b"testserver"), (b"x-csrf-token", headers["X-CSRF-Token"].encode()),
                         (b"cookie", f"embedlab_session={client.cookies.get('embedlab_session')}".encode())]}
    import anyio
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413 and len(pulled) == 11  # stopped at the chunk that crossed 10,000 bytes
    page = client.post("/admin/users", data={"csrf_token": headers["X-CSRF-Token"], "username": "x" * 20_000})
    assert page.status_code == 413 and page.headers["content-type"].startswith("text/html")
    upload = client.post("/test/upload", files={"f": ("big.bin", b"z" * 50_000)}, data={"csrf_token": "x"})
    assert upload.status_code == 413


def test_errors_are_messages_never_tracebacks(app, caplog):
    _test_routes(app)
    _add(app, "ada", "admin")
    client = signed_in(app, "ada", PW)
    with caplog.at_level(logging.ERROR, logger="embedlab.web"):
        page = client.get("/test/boom")
    assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
    for leak in ("Traceback", "secret internal detail", "hunter2", "RuntimeError", ".py"):
        assert leak not in page.text
    ref = page.text.split("error ref ")[1][:8]
    logged = [r for r in caplog.records if ref in r.getMessage()]
    assert logged and logged[0].exc_info and "hunter2" in str(logged[0].exc_info[1])  # the server keeps it
    api = client.get("/api/test/boom")
    assert api.status_code == 500 and set(api.json()) == {"error"} and "error ref" in api.json()["error"]
    assert "KeyError" not in api.text and "Traceback" not in api.text
    user = client.get("/test/user-error")
    assert user.status_code == 400 and "unknown loss &#39;foo&#39;" in user.text
    missing = client.get("/test/not-found")
    assert missing.status_code == 404 and "no such job abc" in missing.text
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/api/no/such").json() == {"error": "page not found: /api/no/such"}
    assert client.put("/login", headers=api_token(client)).status_code == 405
    htmx = client.get("/test/user-error", headers={"HX-Request": "true"})
    assert htmx.json() == {"error": "the recipe names an unknown loss 'foo'"}
    bad = client.post("/api/users", json={"role": "wizard"}, headers=api_token(client))
    assert bad.status_code == 422
    fields = {d["field"] for d in bad.json()["details"]}
    assert {"username", "password", "role"} <= fields and bad.json()["error"].startswith("invalid input")
    form = client.post("/admin/users", data={"csrf_token": api_token(client)["X-CSRF-Token"]})
    assert form.status_code == 422 and "username" in form.text and "Traceback" not in form.text


def test_security_headers_and_static_files(app):
    client = TestClient(app)
    page = client.get("/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "server" not in {k.lower() for k in page.headers if k.lower() == "x-powered-by"}
    for path in ("/static/vendor/htmx.min.js", "/static/vendor/vega.min.js", "/static/vendor/vega-lite.min.js",
                 "/static/vendor/vega-embed.min.js", "/static/app.js", "/static/app.css",
                 "/static/swagger-ui/swagger-ui-bundle.js", "/static/swagger-ui/swagger-ui.css"):
        r = client.get(path)
        assert r.status_code == 200 and len(r.content) > 500, path
    assert client.get("/static/../accounts.py").status_code == 404
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/swagger-ui/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    schema = client.get("/openapi.json").json()
    assert {"/api/me", "/api/users", "/api/users/{user_id}", "/api/health"} <= set(schema["paths"])
    assert client.get("/redoc").status_code == 404


# -- admin pages ---------------------------------------------------------------------------------------------------

def test_admin_page_adds_users_changes_roles_and_disables(admin_client, app):
    page = admin_client.get("/admin/users")
    assert page.status_code == 200 and "ada" in page.text
    token = csrf_from(page.text)
    form = {"csrf_token": token, "username": "Bob", "role": "researcher", "password": PW, "password_again": PW}
    r = admin_client.post("/admin/users", data=form, follow_redirects=True)
    assert "Added bob (researcher)." in r.text and 'id="user-2"' in r.text
    for change, message in (({"password": "short", "password_again": "short"}, "password too short"),
                            ({"password_again": PW + "x"}, "The two passwords differ."),
                            ({}, "user &#39;bob&#39; already exists"),
                            ({"username": "bad name!"}, "invalid user name")):
        r = admin_client.post("/admin/users", data={**form, **change}, follow_redirects=True)
        assert message in r.text, message
    bob = app.state.accounts.get_by_name("bob")
    r = admin_client.post(f"/admin/users/{bob.id}/role", data={"csrf_token": token, "role": "reviewer"},
                          follow_redirects=True)
    assert "bob is now reviewer." in r.text and app.state.accounts.get(bob.id).role == "reviewer"
    # HTMX: the changed row comes back alone, for an in-place swap
    row = admin_client.post(f"/admin/users/{bob.id}/active", data={"csrf_token": token, "active": "false"},
                            headers={"HX-Request": "true"})
    assert row.status_code == 200 and row.text.lstrip().startswith(f'<tr id="user-{bob.id}"') and "disabled" in row.text
    assert not app.state.accounts.get(bob.id).active
    r = admin_client.post(f"/admin/users/{bob.id}/active", data={"csrf_token": token, "active": "true"},
                          follow_redirects=False)  # its flash message waits for the next full page ...
    admin_client.post(f"/admin/users/{bob.id}/role", data={"csrf_token": token, "role": "reviewer"},
                      headers={"HX-Request": "true"})  # ... which an HTMX partial is not
    assert "bob is enabled." in admin_client.get("/admin/users").text
    # refusals: the last admin keeps the role, nobody disables themselves, unknown users are 404
    ada = app.state.accounts.get_by_name("ada")
    r = admin_client.post(f"/admin/users/{ada.id}/role", data={"csrf_token": token, "role": "reviewer"},
                          follow_redirects=True)
    assert "ada is the last active admin" in r.text and app.state.accounts.get(ada.id).role == "admin"
    r = admin_client.post(f"/admin/users/{ada.id}/active", data={"csrf_token": token, "active": "false"},
                          headers={"HX-Request": "true"})
    assert r.status_code == 400 and r.json() == {"error": "you cannot disable your own account"}
    r = admin_client.post("/admin/users/999/role", data={"csrf_token": token, "role": "reviewer"},
                          follow_redirects=True)
    assert "no user 999" in r.text
    r = admin_client.post(f"/admin/users/{bob.id}/role", data={"csrf_token": token, "role": "wizard"})
    assert r.status_code == 422


def test_me_page_changes_the_password_and_ends_other_sessions(app):
    _add(app, "bob", "researcher")
    here, elsewhere = signed_in(app, "bob", PW), signed_in(app, "bob", PW)
    page = here.get("/me")
    assert page.status_code == 200 and "bob" in page.text and "researcher" in page.text
    token = csrf_from(page.text)
    change = {"csrf_token": token, "old_password": PW, "new_password": PW2, "new_password_again": PW2}
    for wrong, message in (({"old_password": "not my password"}, "the current password is wrong"),
                           ({"new_password": "short", "new_password_again": "short"}, "password too short"),
                           ({"new_password_again": "mismatch mismatch"}, "The two new passwords differ."),
                           ({"new_password": "bob", "new_password_again": "bob"}, "password too short")):
        r = here.post("/me/password", data={**change, **wrong}, follow_redirects=True)
        assert message in r.text, message
    r = here.post("/me/password", data=change, follow_redirects=True)
    assert "Password changed." in r.text
    assert here.get("/api/me").status_code == 200  # this session continues
    assert elsewhere.get("/api/me").status_code == 401  # the other one ended
    assert login(TestClient(app), "bob", PW).status_code == 401
    assert login(TestClient(app), "bob", PW2).status_code == 303
    assert TestClient(app).get("/me", follow_redirects=False).status_code == 303


# -- JSON API ------------------------------------------------------------------------------------------------------

def test_api_endpoints(admin_client, app):
    anonymous = TestClient(app)
    health = anonymous.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert anonymous.get("/api/me").json() == {"error": "please log in first"}
    assert anonymous.get("/api/users").status_code == 401
    me = admin_client.get("/api/me").json()
    assert me["username"] == "ada" and me["role"] == "admin" and len(me["csrf_token"]) > 20
    assert "password_hash" not in me
    headers = {"X-CSRF-Token": me["csrf_token"]}
    created = admin_client.post("/api/users", json={"username": "Carol", "password": PW, "role": "reviewer"},
                                headers=headers)
    assert created.status_code == 201 and created.json()["username"] == "carol"
    assert created.json()["role"] == "reviewer" and created.json()["active"] is True
    dup = admin_client.post("/api/users", json={"username": "carol", "password": PW}, headers=headers)
    assert dup.status_code == 400 and dup.json() == {"error": "user 'carol' already exists"}
    short = admin_client.post("/api/users", json={"username": "dan", "password": "short"}, headers=headers)
    assert short.status_code == 400 and "too short" in short.json()["error"]
    users = admin_client.get("/api/users").json()
    assert [u["username"] for u in users] == ["ada", "carol"] and all("password_hash" not in u for u in users)
    cid = created.json()["id"]
    patched = admin_client.patch(f"/api/users/{cid}", json={"role": "researcher", "active": False}, headers=headers)
    assert patched.json()["role"] == "researcher" and patched.json()["active"] is False
    assert admin_client.patch("/api/users/999", json={"role": "admin"}, headers=headers).status_code == 404
    me_id = me["id"]
    assert admin_client.patch(f"/api/users/{me_id}", json={"active": False}, headers=headers).status_code == 400
    assert admin_client.patch(f"/api/users/{me_id}", json={"role": "reviewer"}, headers=headers).json() == \
        {"error": "ada is the last active admin; make another user admin first"}


def test_health_reports_an_unreachable_database(app):
    app.state.store.engine.dispose()
    from sqlalchemy import create_engine

    app.state.store.engine = create_engine(f"sqlite:///{app.state.config.web_dir}/missing/x.sqlite")
    r = TestClient(app).get("/api/health")
    assert r.status_code == 503 and r.json()["status"] == "unavailable" and "sqlite" not in r.text


# -- accounts: passwords, names, ownership ---------------------------------------------------------------------

def test_password_and_name_rules(app):
    accounts = app.state.accounts
    for name, password, role, message in (("ada", "short", "admin", "too short"),
                                          ("ada", "123456789", "admin", "too short"),
                                          ("ada", " " * 12, "admin", "blank"),
                                          ("ada", "x" * 1025, "admin", "too long"),
                                          ("adalovelace", "AdaLovelace", "admin", "user name"),
                                          ("a", PW, "admin", "invalid user name"),
                                          ("ada/../x", PW, "admin", "invalid user name"),
                                          ("ada", PW, "superuser", "unknown role")):
        with pytest.raises(AccountError, match=message):
            accounts.create_user(name, password, role)
    assert accounts.count_users() == 0
    user = accounts.create_user("ada", "x" * 10, "admin")  # exactly the minimum
    assert accounts.authenticate("ada", "x" * 10) == user
    from sqlalchemy import text
    with accounts.engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM web_users")).scalar_one()
    assert stored.startswith("$argon2id$") and "x" * 10 not in stored


def test_a_hash_with_old_parameters_is_upgraded_at_login(app):
    accounts = app.state.accounts  # the cheap test hasher
    accounts.create_user("ada", PW, "admin")
    production = Accounts(accounts.engine)  # argon2-cffi's defaults, as create_app uses
    assert isinstance(production.hasher, PasswordHasher) and production.hasher.time_cost >= 2
    from sqlalchemy import text

    def stored():
        with accounts.engine.connect() as conn:
            return conn.execute(text("SELECT password_hash FROM web_users")).scalar_one()

    before = stored()
    assert production.hasher.check_needs_rehash(before)
    assert production.authenticate("ada", PW) is not None
    after = stored()
    assert after != before and not production.hasher.check_needs_rehash(after)
    assert production.authenticate("ada", "wrong password") is None and production.authenticate("zed", PW) is None


def test_ownership(app):
    accounts = app.state.accounts
    admin, alice, bob = (accounts.create_user(n, PW, r) for n, r in
                         (("ada", "admin"), ("alice", "researcher"), ("bob", "reviewer")))
    accounts.own("job", "j1", alice)
    accounts.own("job", "j1", alice)  # idempotent
    accounts.own("upload", "u1", bob)
    with pytest.raises(AccountError, match="already belongs to another user"):
        accounts.own("job", "j1", bob)
    assert accounts.owner_of("job", "j1") == alice and accounts.owner_of("job", "nope") is None
    accounts.require_owner("job", "j1", alice)
    accounts.require_owner("job", "j1", admin)  # admins may read everything
    with pytest.raises(NotFound, match="no such job j1"):
        accounts.require_owner("job", "j1", admin, allow_admin=False)
    for user, kind, oid in ((bob, "job", "j1"), (alice, "upload", "u1"), (alice, "job", "missing"),
                            (alice, "upload", "j1"), (alice, "job", "x" * 500)):
        with pytest.raises(NotFound):  # another user's object looks like a missing one
            accounts.require_owner(kind, oid, user)
    with pytest.raises(ValueError):
        accounts.own("dataset", "d", alice)  # an unknown kind is a page's bug
    accounts.own("job", "j2", bob)
    assert accounts.owned_ids("job", alice) == ["j1"] and accounts.owned_ids("job", bob) == ["j2"]
    assert accounts.owned_ids("job", admin) == ["j1", "j2"]
    accounts.disown("job", "j1")
    assert accounts.owner_of("job", "j1") is None


# -- configuration: the session secret ---------------------------------------------------------------------------

def test_the_session_secret_is_generated_once_private_and_never_a_default(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBEDLAB_SECRET_KEY", raising=False)
    config = WebConfig(db_url=f"sqlite:///{tmp_path / 'r.sqlite'}", web_dir=tmp_path / "web")
    app = create_app(config)
    app.state.accounts.hasher = fast_hasher()
    secret_file = tmp_path / "web" / "secret_key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    key = secret_file.read_text().strip()
    assert len(key) >= 32 and config.secret() == key
    app.state.accounts.create_user("ada", PW, "admin")
    client = signed_in(app, "ada", PW)
    restarted = create_app(config)  # the same key after a restart: sessions survive
    assert TestClient(restarted, cookies=dict(client.cookies)).get("/api/me").status_code == 200
    other = WebConfig(db_url=config.db_url, web_dir=tmp_path / "web2")
    assert other.secret() != key  # a new folder, a new random key (no built-in default)
    monkeypatch.setenv("EMBEDLAB_SECRET_KEY", "e" * 40)
    assert config.secret() == "e" * 40
    monkeypatch.setenv("EMBEDLAB_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="at least 32"):
        config.secret()
    monkeypatch.delenv("EMBEDLAB_SECRET_KEY")
    os.chmod(secret_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        create_app(config)
    with pytest.raises(ConfigError, match="at least 32"):
        WebConfig(web_dir=tmp_path, secret_key="short").secret()


def test_secure_cookies_flag(tmp_path):
    app = make_app(tmp_path, secure_cookies=True)
    app.state.accounts.create_user("ada", PW, "admin")
    client = TestClient(app, base_url="https://testserver")
    r = login(client, "ada", PW)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


# -- the CLI: embedlab users ..., embedlab serve -----------------------------------------------------------------

def _cli():
    from embedlab.cli import serve as serve_cli

    root = typer.Typer()
    root.add_typer(serve_cli.app)  # as embedlab/cli/__init__.py registers it
    return root


def test_users_cli(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    monkeypatch.setattr(Accounts, "__init__", _fast_init)
    runner, cli = CliRunner(), _cli()
    listed = runner.invoke(cli, ["users", "list", "--db", db])
    assert listed.exit_code == 0 and "no accounts yet" in listed.output
    r = runner.invoke(cli, ["users", "create-admin", "Ada", "--db", db], input=f"{PW}\n{PW}\n")
    assert r.exit_code == 0, r.output
    assert "created admin ada" in r.output and PW not in r.output  # the prompt hides the password
    r = runner.invoke(cli, ["users", "create-admin", "root", "--db", db], input="tooshort\ntooshort\n")
    assert isinstance(r.exception, AccountError) and "too short" in str(r.exception)
    r = runner.invoke(cli, ["users", "create-admin", "root", "--db", db], input=f"{PW}\n{PW}x\n{PW}\n{PW}\n")
    assert r.exit_code == 0 and "do not match" in r.output.lower()  # a mismatch is asked again
    r = runner.invoke(cli, ["users", "create-admin", "ops", "--password-stdin", "--db", db], input=PW2 + "\n")
    assert r.exit_code == 0 and "created admin ops" in r.output
    r = runner.invoke(cli, ["users", "create-admin", "ops2", "--password-stdin", "--db", db], input="short\n")
    assert isinstance(r.exception, AccountError) and "too short" in str(r.exception)
    r = runner.invoke(cli, ["users", "add", "bob", "--role", "reviewer", "--password-stdin", "--db", db],
                      input=PW2 + "\n")
    assert r.exit_code == 0 and "created reviewer bob" in r.output
    r = runner.invoke(cli, ["users", "add", "carl", "--password-stdin", "--db", db], input="short\n")
    assert isinstance(r.exception, AccountError)
    r = runner.invoke(cli, ["users", "add", "carl", "--role", "wizard", "--password-stdin", "--db", db], input=PW)
    assert isinstance(r.exception, AccountError) and "unknown role" in str(r.exception)
    assert runner.invoke(cli, ["users", "set-role", "bob", "researcher", "--db", db]).exit_code == 0
    assert runner.invoke(cli, ["users", "disable", "bob", "--db", db]).exit_code == 0
    r = runner.invoke(cli, ["users", "disable", "nobody", "--db", db])
    assert isinstance(r.exception, NotFound)
    listed = runner.invoke(cli, ["users", "list", "--db", db])
    assert "4 account(s)" in listed.output and "bob" in listed.output and "researcher" in listed.output
    assert runner.invoke(cli, ["users", "enable", "bob", "--db", db]).exit_code == 0
    assert runner.invoke(cli, ["users", "set-password", "bob", "--password-stdin", "--db", db],
                         input=PW + "\n").exit_code == 0
    with Accounts.open(db) as accounts:
        assert accounts.authenticate("ada", PW).role == "admin"
        assert accounts.authenticate("ops", PW2).role == "admin"  # the line without its newline
        assert accounts.authenticate("bob", PW).role == "researcher"
        assert accounts.authenticate("bob", PW2) is None
        assert accounts.authenticate("carl", PW) is None


def _fast_init(self, engine, hasher=None, _original=Accounts.__init__):
    _original(self, engine, hasher or fast_hasher())


def test_serve_cli(tmp_path, monkeypatch):
    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    monkeypatch.setenv("EMBEDLAB_SECRET_KEY", SECRET)
    runner, cli = CliRunner(), _cli()
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    for host in ("0.0.0.0", "192.168.1.5", "lab.example.org"):
        r = runner.invoke(cli, ["serve", "--host", host, "--db", db, "--web-dir", str(tmp_path / "web")])
        assert isinstance(r.exception, ConfigError) and "--secure-cookies" in str(r.exception)
    assert not runs
    r = runner.invoke(cli, ["serve", "--db", db, "--web-dir", str(tmp_path / "web"), "--executor", "ray",
                            "--address", "ray://head:10001", "--port", "8123", "--max-upload-mb", "3"])
    assert r.exit_code == 0, r.output
    assert "no accounts yet" in r.output and "embedlab users create-admin" in r.output
    app, kw = runs[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8123
    cfg = app.state.config
    assert (cfg.executor, cfg.ray_address, cfg.max_upload_bytes, cfg.secure_cookies) == \
        ("ray", "ray://head:10001", 3 * 1024 * 1024, False)
    assert cfg.db_url == db and cfg.web_dir == tmp_path / "web"
    r = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--secure-cookies", "--db", db,
                            "--web-dir", str(tmp_path / "web")])
    assert r.exit_code == 0 and runs[-1][1]["host"] == "0.0.0.0" and runs[-1][0].state.config.secure_cookies
    r = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--insecure-cookies-ok", "--db", db,
                            "--web-dir", str(tmp_path / "web")])
    assert r.exit_code == 0
    r = runner.invoke(cli, ["serve", "--executor", "inline", "--db", db, "--web-dir", str(tmp_path / "web")])
    assert isinstance(r.exception, ConfigError)
    # the default: a local Ray instance when Ray is installed, else local worker processes; demo model folders
    (tmp_path / "models").mkdir()
    r = runner.invoke(cli, ["serve", "--db", db, "--web-dir", str(tmp_path / "web"),
                            "--demo-models", str(tmp_path / "models")])
    assert r.exit_code == 0, r.output
    cfg = runs[-1][0].state.config
    import importlib.util

    expected = "ray" if importlib.util.find_spec("ray") else "local"
    assert cfg.executor == expected and cfg.demo_models == (tmp_path / "models",)
    # (words compared: the message wraps at the console's width wherever the web folder's path pushes it)
    assert ("a local Ray instance" if expected == "ray" else "local worker processes") in " ".join(r.output.split())
    r = runner.invoke(cli, ["serve", "--db", db, "--web-dir", str(tmp_path / "web"),
                            "--demo-models", str(tmp_path / "nope")])
    assert isinstance(r.exception, ConfigError) and "nope" in str(r.exception)


def test_embedlab_serve_runs_as_a_process_and_stops_on_ctrl_c(tmp_path):
    """The real command: `embedlab serve` in its own process answers /api/health and the login page, and a SIGINT
    (Ctrl-C) stops it cleanly (exit 0)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "EMBEDLAB_SECRET_KEY": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "embedlab", "serve", "--port", str(port), "--db",
                             str(tmp_path / "r.sqlite"), "--web-dir", str(tmp_path / "web"), "--executor", "local"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_as_at_a_terminal)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "embedlab serve did not answer within 90 s"
                time.sleep(0.3)
        assert health.json()["status"] == "ok"
        login_page = httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
        assert login_page.status_code == 200 and "embedlab users create-admin" in login_page.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "no accounts yet" in out and f"http://127.0.0.1:{port}" in out


# -- PostgreSQL ----------------------------------------------------------------------------------------------------

def test_accounts_and_login_on_postgresql(postgres_server, tmp_path):
    url = postgres_server.create_database(f"web_{uuid.uuid4().hex[:10]}")
    app = make_app(tmp_path, db_url=url)
    _test_routes(app)
    assert app.state.accounts.count_users() == 0
    admin = app.state.accounts.create_user("ada", PW, "admin")
    client = signed_in(app, "ada", PW)
    headers = api_token(client)
    created = client.post("/api/users", json={"username": "bob", "password": PW2, "role": "researcher"},
                          headers=headers)
    assert created.status_code == 201
    dup = client.post("/api/users", json={"username": "BOB", "password": PW2}, headers=headers)
    assert dup.status_code == 400 and "already exists" in dup.json()["error"]
    bob_client = signed_in(app, "bob", PW2)
    assert bob_client.get("/admin/users").status_code == 403
    bob = app.state.accounts.get_by_name("bob")
    app.state.accounts.own("job", "pg-job", bob)
    with pytest.raises(NotFound):
        app.state.accounts.require_owner("job", "pg-job", app.state.accounts.create_user("eve", PW, "reviewer"))
    assert app.state.accounts.owned_ids("job", admin) == ["pg-job"]
    with pytest.raises(AccountError, match="last active admin"):
        app.state.accounts.set_role("ada", "reviewer")
    client.patch(f"/api/users/{bob.id}", json={"active": False}, headers=headers)
    assert bob_client.get("/api/me").status_code == 401
    # a SQL-looking name is just a (refused) name: every query is parametrised
    assert login(TestClient(app), "ada' OR '1'='1", PW).status_code == 401
    assert client.get("/api/health").json()["status"] == "ok"
    app.state.store.close()
