"""The settings page in a real browser: headless Chromium driven by Selenium.

The Starlette example (``examples/starlette_app.py``) with the management
routes mounted runs under a real uvicorn on a loopback port; the Flask
example runs under werkzeug's server. In each, the browser logs in, creates
a token, reads it from the page (and from the clipboard, after the copy
button), the token works against the API, the browser revokes it (accepting
the confirmation), the API then refuses it, and the page's security log
shows the token's creation and revocation. The Starlette run saves a
screenshot: to ``docs/settings-page.png`` (the README's) when
``PAT_UPDATE_SCREENSHOT=1``, else next to the test's temporary files.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from pat_middleware import PATAuth
from tests.conftest import skip_or_fail
from tests.helpers import FAST_ARGON2
from tests.management_apps import SECRET
from tests.management_fixtures import management_store, management_store_url

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "settings-page.png"
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1100",
)


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        skip_or_fail("headless Chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    assert chromium and driver
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver_path = _binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="pat-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve_starlette(app: Any) -> Iterator[str]:
    """The app under a real uvicorn on a free loopback port."""
    import uvicorn

    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.025)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def serve_flask(app: Any) -> Iterator[str]:
    """The app under werkzeug's threaded server on a free loopback port."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def _starlette(tmp_path: Path) -> tuple[Callable[[], Any], PATAuth]:
    from examples.starlette_app import create_app

    auth = PATAuth(management_store(tmp_path), hasher=FAST_ARGON2)
    app = create_app(auth, close_auth=False, session_secret=SECRET)  # the example as shipped
    return (lambda: serve_starlette(app)), auth


def _flask(tmp_path: Path) -> tuple[Callable[[], Any], PATAuth]:
    from examples.flask_app import create_app

    app = create_app({"PAT_STORE_URL": management_store_url(tmp_path), "SECRET_KEY": SECRET})
    auth: PATAuth = app.extensions["pat"].auth
    return (lambda: serve_flask(app)), auth


def _submit(driver: Any, button: Any, accept_confirm: str | None = None) -> None:
    """Click a submit button and wait until the next page has replaced this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    # A marker on the old page's window object, not staleness_of(<html>):
    # chromedriver sometimes answers a query on a node of the page being
    # replaced with "Node with given id does not belong to the document"
    # instead of a stale-element error. Errors while the navigation is in
    # flight are ignored; the wait ends once a fresh page has fully loaded.
    wait = WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,))
    driver.execute_script("window.__patOldPage = true;")
    button.click()
    if accept_confirm is not None:
        alert = wait.until(expected_conditions.alert_is_present())
        assert accept_confirm in alert.text
        alert.accept()
    wait.until(lambda d: d.execute_script("return window.__patOldPage !== true && document.readyState === 'complete';"))


def _create(driver: Any, name: str, scopes: list[str], resources: str = "") -> str:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "name").send_keys(name)
    for scope in scopes:
        driver.find_element(By.CSS_SELECTOR, f'input[name="scope"][value="{scope}"]').click()
    if resources:  # typing picks "Only selected resources" (the page's script)
        driver.find_element(By.ID, "resources").send_keys(resources)
        assert driver.find_element(By.ID, "resource-selected").is_selected()
    _submit(driver, driver.find_element(By.ID, "generate"))
    token: str = driver.find_element(By.ID, "new-token").text
    assert token.startswith("pat_") and token not in driver.current_url
    return token


def _use(base_url: str, token: str) -> tuple[int, int]:
    headers = {"Authorization": f"Bearer {token}"}
    api = httpx.get(f"{base_url}/api/tokens", headers=headers, timeout=10)
    repos = httpx.get(f"{base_url}/repos", headers=headers, timeout=10)
    return api.status_code, repos.status_code


def _log_kinds(driver: Any, token_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    section = driver.find_element(By.ID, "security-log")
    assert section.find_element(By.TAG_NAME, "h2").text == "Security log"
    rows = section.find_elements(By.CSS_SELECTOR, f'tr.log-entry[data-token-id="{token_id}"]')
    return [str(row.get_attribute("data-kind")) for row in rows]


def _check_security_log(driver: Any, base_url: str, token_id: str) -> None:
    """The page's log shows the token's creation and revocation (the log's writer
    flushes within half a second: reload until the revocation is there)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 10
    while "revoked" not in (kinds := _log_kinds(driver, token_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
        driver.get(f"{base_url}/settings/tokens")
    assert kinds[0] == "revoked" and kinds[-1] == "created", kinds
    assert set(kinds) <= {"created", "new_address", "revoked"}, kinds
    row = driver.find_element(By.CSS_SELECTOR, f'#security-log tr.log-entry[data-token-id="{token_id}"]')
    assert "laptop" in row.text and token_id in row.text and "UTC" in row.text


@pytest.mark.parametrize("framework", ["starlette", "flask"])
def test_settings_page_in_a_browser(browser: Any, tmp_path: Path, framework: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    serve, auth = (_starlette if framework == "starlette" else _flask)(tmp_path)
    wait = WebDriverWait(browser, 10)
    try:
        with serve() as base_url:
            browser.get(f"{base_url}/settings/tokens")
            assert browser.current_url == f"{base_url}/login?next=/settings/tokens"
            browser.find_element(By.ID, "username").send_keys("alice")
            _submit(browser, browser.find_element(By.ID, "login"))
            assert browser.find_element(By.ID, "user").text == "alice"

            _create(browser, "ci pipeline", ["repo:read"])
            web = _create(browser, "web only", ["repo:read"], resources="web")
            assert auth.manager.get(web[4:16]).resources == ("web",)
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-token-id="{web[4:16]}"]')
            assert "only" in row.text and "web" in row.text
            assert httpx.get(f"{base_url}/repos/web", headers={"Authorization": f"Bearer {web}"}).status_code == 200
            other = httpx.get(f"{base_url}/repos/api", headers={"Authorization": f"Bearer {web}"})
            assert other.status_code == 403 and other.json()["error"] == "insufficient_scope"
            assert "api" not in other.json()["error_description"]
            token = _create(browser, "laptop", ["repo:read", "tokens:manage"])
            box = browser.find_element(By.ID, "new-token-box").text
            assert "Copy it now" in box
            browser.execute_cdp_cmd(
                "Browser.grantPermissions",
                {"origin": base_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
            )
            browser.find_element(By.ID, "copy-token").click()
            wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "copy-token"), "Copied"))
            pasted = browser.execute_async_script(
                "navigator.clipboard.readText().then(arguments[0], () => arguments[0](null));"
            )
            assert pasted == token

            assert _use(base_url, token) == (200, 200)
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-token-id="{token[4:16]}"]')
            assert "laptop" in row.text and "tokens:manage" in row.text
            if framework == "starlette":
                update = os.environ.get("PAT_UPDATE_SCREENSHOT") == "1"
                shot = DOCS_SCREENSHOT if update else Path(tempfile.mkdtemp()) / "settings-page.png"
                assert browser.save_screenshot(str(shot))
                assert shot.stat().st_size > 10_000
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            browser.get(f"{base_url}/settings/tokens")
            assert token not in browser.page_source  # shown once
            ci_id = next(r.id for r in auth.manager.list("alice") if r.name == "ci pipeline")
            ci_row = browser.find_element(By.CSS_SELECTOR, f'tr[data-token-id="{ci_id}"]')
            ci_row.find_element(By.CSS_SELECTOR, 'button[name="revoke"]').click()
            wait.until(expected_conditions.alert_is_present()).dismiss()  # "Cancel": nothing happens
            assert browser.current_url == f"{base_url}/settings/tokens"
            assert auth.manager.get(ci_id).revoked_at is None
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-token-id="{token[4:16]}"]')
            _submit(browser, row.find_element(By.CSS_SELECTOR, 'button[name="revoke"]'), "Revoke 'laptop'?")
            assert browser.current_url == f"{base_url}/settings/tokens?done=revoked"
            assert "Token revoked." in browser.find_element(By.CSS_SELECTOR, '[role="status"]').text
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-token-id="{token[4:16]}"]')
            assert row.get_attribute("data-state") == "revoked"

            assert _use(base_url, token) == (401, 401)
            assert [r.name for r in auth.manager.list("alice")] == ["ci pipeline", "web only"]
            _check_security_log(browser, base_url, token[4:16])
    finally:
        auth.close()
