"""The worklist in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, selenium),
served by the real service over HTTP: sign in, filter, change a status, see its audit entry,
download the CSV, open a report. Screenshots are saved under ``tests/artifacts/worklist-*.png``; the
strict CSP must not be violated (no console errors).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds.worklist.auth import hash_password
from tests.worklist.builders import NOW, REFERRED, db_url, seed
from tests.worklist.fake_idp import FakeIdp
from tests.worklist.test_routes import PASSWORD, settings_for

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {missing} (.ci/run installs chromium and chromium-driver)")
        pytest.skip(f"no headless browser here: {missing}")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Any]:
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


class _Server:
    """An ASGI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def start(self, app: Any) -> str:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        assert self.thread is not None
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from cds.service.app import create_app

    tmp = tmp_path_factory.mktemp("worklist-browser")
    seed(db_url(tmp))
    server = _Server()
    yield server.start(create_app(settings_for(tmp), clock=NOW.timestamp))
    server.stop()


@pytest.fixture(scope="module")
def oidc_service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service signing in with OIDC at a fake provider (both real HTTP servers on loopback)."""
    from cds.service.app import create_app

    idp_server = _Server()
    idp = FakeIdp(issuer=idp_server.url)
    idp_server.start(idp.app())
    tmp = tmp_path_factory.mktemp("worklist-oidc-browser")
    seed(db_url(tmp))
    settings = settings_for(
        tmp,
        worklist_oidc_issuer=idp.issuer,
        worklist_oidc_client_id=idp.client_id,
        worklist_oidc_users=[idp.user],
    )
    server = _Server()
    yield server.start(create_app(settings, clock=NOW.timestamp))
    server.stop()
    idp_server.stop()


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _patients(driver: Any) -> list[str]:
    return list(
        driver.execute_script("return [...document.querySelectorAll('#worklist tbody tr')].map(r => r.dataset.patient)")
    )


def _wait(driver: Any, condition: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, 15).until(condition)
    except Exception:
        raise AssertionError(f"{driver.current_url}: {driver.page_source[:2000]}") from None


def _shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(1000, min(int(height) + 40, 6000)))
    path = ARTIFACTS / f"worklist-{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def test_a_coordinator_signs_in_filters_changes_a_status_and_exports(
    browser: Any, service_url: str, downloads: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import Select

    assert hash_password  # the account of settings_for: alice / PASSWORD
    browser.get(service_url + "/worklist")
    assert browser.current_url.endswith("/worklist/login"), "anonymous visitors are sent to the sign-in form"
    _shot(browser, "1-sign-in")
    browser.find_element(By.ID, "user").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(browser, lambda d: d.current_url.endswith("/worklist"))
    assert _patients(browser) == [
        "base-candidate",
        "var-hcg-missing",
        "var-pred-no-dose",
        "real-synthea-quiet",
        REFERRED,
    ]
    assert "referred by clinician" in browser.find_element(By.CSS_SELECTOR, f'tr[data-patient="{REFERRED}"]').text
    assert browser.find_elements(By.CSS_SELECTOR, "svg rect")
    _shot(browser, "2-list")

    # filter: possible candidates with the pregnancy exclusion to verify
    Select(browser.find_element(By.NAME, "verdict")).select_by_value("possible-candidate")
    Select(browser.find_element(By.NAME, "criterion")).select_by_value("exc-pregnancy")
    browser.find_element(By.CSS_SELECTOR, "fieldset button[type=submit]").click()
    _wait(browser, lambda d: "criterion=exc-pregnancy" in d.current_url)
    assert _patients(browser) == ["var-hcg-missing", "real-synthea-quiet"]
    _shot(browser, "3-filtered")

    # status: var-hcg-missing contacted; back on the same filtered list, with the audit entry
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-patient="var-hcg-missing"]')
    Select(row.find_element(By.NAME, "status")).select_by_value("contacted")
    row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, staleness_of(row))
    assert "verdict=possible-candidate" in browser.current_url
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-patient="var-hcg-missing"]')
    assert row.find_element(By.CSS_SELECTOR, "td.status").text.startswith("contacted (ResearchSubject: candidate)")
    audit = browser.find_element(By.CSS_SELECTOR, "table.audit tbody").text
    assert "alice NCT04582136 var-hcg-missing new → contacted" in audit
    _shot(browser, "4-status-changed")

    # CSV of the filtered list
    browser.find_element(By.ID, "csv").click()
    deadline = time.monotonic() + 20
    files: list[Path] = []
    while time.monotonic() < deadline:
        files = [p for p in downloads.glob("worklist-*.csv") if not p.name.endswith(".crdownload")]
        if files:
            break
        time.sleep(0.1)
    assert len(files) == 1, list(downloads.iterdir())
    rows = list(csv.DictReader(io.StringIO(files[0].read_text(encoding="utf-8"))))
    assert [(r["patient"], r["status"]) for r in rows] == [
        ("var-hcg-missing", "contacted"),
        ("real-synthea-quiet", "new"),
    ]

    # the full audit trail, then the report of one row
    browser.find_element(By.LINK_TEXT, "Full audit trail").click()
    _wait(browser, lambda d: d.current_url.endswith("/worklist/audit"))
    assert "new → contacted" in browser.find_element(By.CSS_SELECTOR, "table.audit").text
    _shot(browser, "5-audit")
    browser.back()
    _wait(browser, lambda d: "verdict=" in d.current_url)
    browser.find_element(By.LINK_TEXT, "var-hcg-missing").click()
    _wait(browser, lambda d: "/worklist/report/" in d.current_url)
    assert "Possible candidate: 1 to verify" in browser.title
    _shot(browser, "6-report")
    assert _console_errors(browser) == []


def test_a_wrong_password_keeps_the_visitor_out(browser: Any, service_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(service_url + "/worklist/login")
    browser.find_element(By.ID, "user").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"))
    assert "Wrong user name or password" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    browser.get(service_url + "/worklist")
    assert browser.current_url.endswith("/worklist/login")
    errors = _console_errors(browser)
    assert all("401" in e["message"] for e in errors), errors  # the 401 status itself is logged by Chromium


def test_a_coordinator_signs_in_with_oidc(browser: Any, oidc_service_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(oidc_service_url + "/worklist")
    browser.find_element(By.ID, "oidc").click()  # to the provider and back (authorization code + PKCE)
    _wait(browser, lambda d: d.current_url == oidc_service_url + "/worklist")
    assert "Signed in as coordinator@example.org" in browser.find_element(By.TAG_NAME, "header").text
    assert _patients(browser)[0] == "base-candidate"
    _shot(browser, "7-oidc-signed-in")
    assert _console_errors(browser) == []
