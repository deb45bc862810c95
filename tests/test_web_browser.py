"""The web app in a real browser (Playwright driving Debian's Chromium, tests/web_server.py): log in, see the home
page, open the admin page, add a researcher, change a role through HTMX, see an HTMX refusal (the last admin keeps
the role), log out; and the API documentation page renders from the vendored Swagger UI. Any JavaScript error or
Content-Security-Policy violation fails the test.

Screenshots of each step go to tmp_path; with EMBEDLAB_SCREENSHOTS=1 they go to docs/web/screenshots/ (the ones
docs/web.md shows), so a normal run never rewrites committed files.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from web_server import LiveServer, browser, make_app, page, watch_errors  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
PW = "correct horse battery"


@pytest.fixture
def shots(tmp_path):
    folder = ROOT / "docs" / "web" / "screenshots" if os.environ.get("EMBEDLAB_SCREENSHOTS") == "1" \
        else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_login_admin_add_user_logout(page, tmp_path, shots):  # noqa: F811
    from playwright.sync_api import expect

    app = make_app(tmp_path)
    app.state.accounts.create_user("ada", PW, "admin")  # the Python API, as `embedlab users create-admin` does
    errors = watch_errors(page)
    with LiveServer(app) as base:
        page.goto(base + "/")
        expect(page).to_have_url(base + "/login?next=/")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.screenshot(path=shots / "01-login.png")

        page.get_by_label("User name").fill("ada")
        page.get_by_label("Password").fill(PW)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(base + "/")
        expect(page.get_by_role("heading", name="Welcome, ada")).to_be_visible()
        expect(page.locator(".flash-success")).to_have_text("Signed in as ada.")
        page.screenshot(path=shots / "02-home.png")

        page.get_by_role("navigation", name="main").get_by_role("link", name="Users").click()
        expect(page).to_have_url(base + "/admin/users")
        expect(page.locator("#users tbody tr")).to_have_count(1)
        page.screenshot(path=shots / "03-admin-users.png")

        form = page.locator("#add-user")
        form.get_by_label("User name").fill("rita")
        form.get_by_label("Role").select_option("researcher")
        form.get_by_label("Password (at least 10 characters)").fill("rita's long password")
        form.get_by_label("Password again").fill("rita's long password")
        form.get_by_role("button", name="Add user").click()
        expect(page.locator(".flash-success")).to_have_text("Added rita (researcher).")
        rita = page.locator("#users tbody tr", has_text="rita")
        expect(rita).to_contain_text("active")
        page.screenshot(path=shots / "04-user-added.png")

        # HTMX: the role form posts with the CSRF header from base.html and the row is swapped in place.
        rita.get_by_label("role of rita").select_option("reviewer")
        with page.expect_response(lambda r: r.url.endswith("/role")) as answer:
            rita.get_by_role("button", name="Set role").click()
        assert answer.value.status == 200 and answer.value.request.headers.get("x-csrf-token")
        expect(page.locator("#users tbody tr", has_text="rita").get_by_label("role of rita")).to_have_value(
            "reviewer")
        expect(page.locator(".flash-success")).to_have_text("Added rita (researcher).")  # no reload: swapped in place
        assert app.state.accounts.get_by_name("rita").role == "reviewer"
        assert not errors, errors
        # An HTMX refusal (JSON error) is shown in the flash area by static/app.js.
        ada = page.locator("#users tbody tr", has_text="ada")
        expect(ada).to_contain_text("(you)")  # no Disable button on your own row
        ada.get_by_label("role of ada").select_option("reviewer")
        ada.get_by_role("button", name="Set role").click()
        expect(page.locator(".flash-error")).to_have_text(
            "ada is the last active admin; make another user admin first")
        assert app.state.accounts.get_by_name("ada").role == "admin"
        assert all("400" in e for e in errors), errors  # the browser logs the refused request itself
        errors.clear()

        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(base + "/login")
        expect(page.locator(".flash-info")).to_have_text("You are signed out.")
        page.screenshot(path=shots / "05-logged-out.png")
        page.goto(base + "/admin/users")
        expect(page).to_have_url(base + "/login?next=/admin/users")

        page.goto(base + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("embedlab")
        expect(page.locator(".opblock-summary-path", has_text="/api/users").first).to_be_visible()
        page.screenshot(path=shots / "06-api-docs.png")
    assert not errors, errors
