"""The full report page behind the card's link: opaque URL, accessible HTML, escaped chart text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
from service_helpers import PID, SERVICE, full_prefetch, hook_request, searchset, sle_condition

from cards.codes import REPORT_EXTENSION_KEY
from cds.config import Settings


class Page(HTMLParser):
    """The bits of the page the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


async def _card_and_page(
    client: httpx.AsyncClient, prefetch: dict[str, Any] | None = None
) -> tuple[dict, httpx.Response]:
    response = await client.post(SERVICE, json=hook_request(prefetch or full_prefetch()))
    card = response.json()["cards"][0]
    link = card["links"][0]
    url = urlsplit(link["url"])
    return card, await client.get(url.path)


async def test_card_links_an_opaque_short_lived_report_url(client: httpx.AsyncClient) -> None:
    response = await client.post(SERVICE, json=hook_request(full_prefetch()))
    links = response.json()["cards"][0]["links"]
    report, trial = links
    assert report["type"] == "absolute"
    assert report["autoLaunchable"] is False
    assert trial["url"].startswith("https://clinicaltrials.gov/")
    url = urlsplit(report["url"])
    assert f"{url.scheme}://{url.netloc}" == "http://cds.test"
    assert re.fullmatch(r"/report/[A-Za-z0-9_-]{32}", url.path)
    assert not url.query
    assert PID not in report["url"]


async def test_report_page_is_accessible_html_with_every_criterion_anchored(client: httpx.AsyncClient) -> None:
    card, response = await _card_and_page(client)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    page = parse(response.text)
    tags = [t for t, _ in page.tags]
    assert ("html", {"lang": "en"}) in page.tags
    assert tags.count("h1") == 1
    assert "title" in tags
    assert "caption" in tags
    assert "script" not in tags
    criteria = card["extension"][REPORT_EXTENSION_KEY]["criteria"]
    row_ids = [a["id"] for t, a in page.tags if t == "tr" and a.get("id")]
    assert sorted(row_ids) == sorted(c["id"] for c in criteria)
    col_headers = [a for t, a in page.tags if t == "th" and a.get("scope") == "col"]
    row_headers = [a for t, a in page.tags if t == "th" and a.get("scope") == "row"]
    assert len(col_headers) == 4
    assert len(row_headers) == len(criteria)
    summary_words = card["summary"].split(": ")[-1]  # e.g. "1 to verify": the same count on both
    assert summary_words in response.text


async def test_chart_text_on_the_report_page_is_escaped(client: httpx.AsyncClient) -> None:
    prefetch = full_prefetch()
    hostile = sle_condition()
    hostile["code"]["coding"][0]["display"] = "<script>alert(1)</script><a href='https://evil.example'>x</a>"
    prefetch["conditions"] = searchset([hostile])
    _, response = await _card_and_page(client, prefetch)
    page = parse(response.text)
    assert "script" not in [t for t, _ in page.tags]
    assert [a for t, a in page.tags if t == "a"] == [{"href": "https://clinicaltrials.gov/study/NCT04582136"}]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


async def test_unknown_or_malformed_tokens_get_a_plain_404_page(client: httpx.AsyncClient) -> None:
    for path in ("/report/" + "A" * 32, "/report/short", "/report/%3Cscript%3E"):
        response = await client.get(path)
        assert response.status_code == 404
        assert "This report link has expired" in response.text
        assert response.headers["cache-control"] == "no-store"


async def test_smart_link_type_is_a_setting(make_client: Any, settings: Settings) -> None:
    async with make_client(settings.model_copy(update={"report_link_type": "smart"})) as client:
        response = await client.post(SERVICE, json=hook_request(full_prefetch()))
    assert response.json()["cards"][0]["links"][0]["type"] == "smart"
