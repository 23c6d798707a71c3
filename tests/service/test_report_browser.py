"""The card and its report page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``,
driven by selenium): screenshots saved under ``tests/artifacts/`` and no console errors.

* the card, rendered with the CDS Hooks sandbox's markdown stack (react-markdown + remark-gfm +
  rehype-raw, `tests/cards/render_js`) in a sandbox-sized card panel: it must fit without a
  horizontal scroll bar;
* the report page, served by the real service over HTTP and reached through the card's link: lang,
  title, table headers, one anchored row per criterion (``#inc-sledai`` scrolls to its row).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import SERVICE

from cds.config import Settings
from cds.service.app import create_app
from cds.service.demo import FIXTURES_AS_OF, build_request, load_bundle
from tests.markdown_renderers import react_markdown

PATIENTS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "patients"

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PATIENT = "var-hcg-missing"  # a possible candidate with one criterion to verify


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
def browser() -> Iterator[Any]:
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real service on a free loopback port (uvicorn in a thread)."""
    import uvicorn

    tmp = tmp_path_factory.mktemp("browser-db")
    settings = Settings(
        database_url=f"sqlite:///{tmp}/state.sqlite3",
        as_of=FIXTURES_AS_OF,
        auth_required=False,
        fhir_allowed_servers=[],
        log_level="WARNING",
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def card(service_url: str) -> dict[str, Any]:
    request = build_request(load_bundle(PATIENTS_DIR / f"{PATIENT}.json"), fhir_server=None)
    response = httpx.post(service_url + SERVICE, json=request, timeout=30, trust_env=False)
    assert response.status_code == 200
    cards: list[dict[str, Any]] = response.json()["cards"]
    assert len(cards) == 1
    return cards[0]


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _sandbox_card_page(card: dict[str, Any]) -> str:
    """The card as the sandbox lays it out: summary, detail through its markdown stack, links, suggestion."""
    detail = react_markdown([card["detail"]])[0]
    links = "".join(
        f'<a class="link" href="{html.escape(link["url"])}">{html.escape(link["label"])}</a>' for link in card["links"]
    )
    buttons = "".join(f"<button>{html.escape(s['label'])}</button>" for s in card.get("suggestions", []))
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Card</title>
<link rel="icon" href="data:,"><style>
body{{font-family:Helvetica,Arial,sans-serif;background:#f2f2f2;margin:0;padding:16px}}
.panel{{width:440px;background:#fff;border:1px solid #ccc;border-left:6px solid #3a87ad;padding:12px 16px;overflow:auto}}
.summary{{font-size:16px;font-weight:bold;margin-bottom:8px}} .detail{{font-size:14px}}
.detail ul{{padding-left:18px}} .source{{font-size:12px;color:#666}} .link{{display:block;margin:4px 0}}
button{{margin-top:8px;padding:6px 10px}}
</style></head><body><div class="panel" id="card"><div class="summary">{html.escape(card["summary"])}</div>
<div class="source">Source: {html.escape(card["source"]["label"])}</div>
<div class="detail">{detail}</div>{links}{buttons}</div></body></html>"""


def test_card_in_the_sandbox_markdown_stack_fits_its_panel(browser: Any, card: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "card-sandbox-markdown.html"
    page.write_text(_sandbox_card_page(card), encoding="utf-8")
    browser.get(page.as_uri())
    panel = browser.find_element("id", "card")
    assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", panel)
    height = browser.execute_script("return arguments[0].getBoundingClientRect().height", panel)
    assert height < 600, f"the card is {height} px tall"
    anchors = browser.execute_script("return [...document.querySelectorAll('.detail a')].length")
    assert anchors == 0
    panel.screenshot(str(ARTIFACTS / "card-sandbox-markdown.png"))
    assert _console_errors(browser) == []


def test_report_page_in_chromium(browser: Any, card: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    url = card["links"][0]["url"]
    browser.get(url)
    assert browser.execute_script("return document.documentElement.lang") == "en"
    assert "NCT04582136 prescreen report: Possible candidate: 1 to verify" in browser.title
    criteria = card["extension"]["org.nct04582136-cds.report"]["criteria"]
    rows = browser.execute_script("return [...document.querySelectorAll('tbody tr[id]')].map(r => r.id)")
    assert sorted(rows) == sorted(c["id"] for c in criteria)
    assert browser.execute_script("return document.querySelectorAll('thead th[scope=col]').length") == 4
    assert browser.execute_script("return document.querySelectorAll('tbody th[scope=row]').length") == len(criteria)
    browser.set_window_size(1280, 2400)
    browser.save_screenshot(str(ARTIFACTS / "report-page.png"))
    browser.get(url + "#exc-pregnancy")
    top = browser.execute_script("return document.getElementById('exc-pregnancy').getBoundingClientRect().top")
    assert abs(top) < 50, "the anchor scrolls its row into view"
    browser.set_window_size(1280, 900)
    assert _console_errors(browser) == [], json.dumps(browser.get_log("browser"))


def test_expired_report_link_is_a_plain_page_without_console_errors(browser: Any, service_url: str) -> None:
    browser.get(service_url + "/report/" + "A" * 32)
    assert "expired" in browser.title
    errors = _console_errors(browser)
    assert all("404" in e["message"] for e in errors), errors  # the 404 status itself is logged by Chromium
