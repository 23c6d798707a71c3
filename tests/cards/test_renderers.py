"""Card markdown stays inert in the renderers clients really use.

* react-markdown 10 + remark-gfm 4 + rehype-raw 7 - the CDS Hooks sandbox's stack, run by Node
  (`render_js/`, pinned in its package.json / package-lock.json; `npm ci` there first);
* markdown-it with linkify on (fuzzy bare domains too, more eager than GFM) and raw HTML on.

Rendered: the card of every fixture patient (excluded ones too, as the quiet card), the cards of a
chart whose every display and free text is hostile, and cards of reports whose every reason, title
and evidence text is hostile. The only anchors allowed are the service's own report page and
ClinicalTrials.gov (those live in ``links``, so ``detail`` has none at all).
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from report_builders import AGE, TRIAL, criterion, report

from cards.render import DETAIL_MAX, ReportLink, render_cards
from cds.bundles import read_bundle_file
from cds.engine import evaluate
from cds.engine.model import Evidence, Kind, Status
from cds.trials.nct04582136 import TRIAL as REAL_TRIAL
from tests.markdown_renderers import markdown_it, react_markdown

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = ROOT / "fixtures" / "patients"
AS_OF = date(2026, 11, 1)
REPORT = ReportLink("https://cds.example.org/report/Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4")
ALLOWED = (REPORT.url, "https://clinicaltrials.gov/")

HOSTILE = [
    "visit https://evil.com/login now",
    "HTTPS://EVIL.EXAMPLE/caps",
    "www.evil.com and WWW.Evil.Example",
    "mail phish@evil.com or mailto:phish@evil.com or xmpp:bot@evil.com",
    "javascript:alert(document.cookie) vbscript:x data:text/html,<script>alert(1)</script>",
    "//evil.com/protocol-relative and http://localhost:8080/admin and ftp://evil.com/f",
    "bare evil.com and sub.evil.co.uk and xn--80ak6aa92e.com and пример.рф",
    "[click me](https://evil.com) [ref][r] ![img](https://evil.com/p.png)\n\n[r]: https://evil.com",
    "<https://evil.com> <phish@evil.com>",
    "<a href='https://evil.com'>lupus</a><img src=x onerror=alert(1)><script>alert(1)</script>",
    "<iframe src=https://evil.com></iframe><svg onload=alert(1)>",
    "&lt;script&gt; &#x6a;avascript:alert(1) \\[escaped\\](https://evil.com)",
    "http://snomed.info/sct|55464009 http://loinc.org|x@evil.com http://snomed.info/sct@evil.com",
    "line\n\n# Heading\n> quote\n- item\n```\nfence\n```",
    "zero\u200bwidth www\u200b.evil.com https\u200b://evil.com",
    "`code https://evil.com` **bold** _em_ ~~strike~~ | pipe |",
]


def _hostile_chart(bundle: dict[str, Any], n: int) -> dict[str, Any]:
    """The bundle with every display, text and note string replaced by hostile text."""
    out = copy.deepcopy(bundle)

    def walk(value: Any, key: str = "") -> Any:
        nonlocal n
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if isinstance(value, str) and key in ("display", "text", "unit", "comment", "name", "family"):
            n += 1
            return f"{value} {HOSTILE[n % len(HOSTILE)]}"
        return value

    return walk(out)  # type: ignore[no-any-return]


def _details(path: Path) -> list[str]:
    contents = read_bundle_file(path)
    out = []
    for p in contents.patients:
        rep = evaluate(p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched)
        out += [c.detail or "" for c in render_cards(rep, REAL_TRIAL, show_excluded=True, report_link=REPORT)]
    return out


def fixture_details() -> tuple[list[str], list[str]]:
    """Card details of every fixture patient, then of every fixture with a hostile chart."""
    plain: list[str] = []
    hostile: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hostile-charts-") as tmp:
        for i, path in enumerate(sorted(PATIENTS.glob("*.json"))):
            plain += _details(path)
            bad = Path(tmp) / path.name
            bad.write_text(json.dumps(_hostile_chart(json.loads(path.read_text(encoding="utf-8")), i)), "utf-8")
            hostile += _details(bad)
    return plain, hostile


def hostile_report_details() -> list[str]:
    """Cards of reports whose every engine text carries hostile strings (the cards module alone)."""
    details = []
    for i, text in enumerate(HOSTILE):
        ev = Evidence(f"Observation/{text}", text, value=text, unit=text, date=text, original=text)
        results = [
            criterion("inc-sle-diagnosis", Status.MET, title=text, reason=text, evidence=(ev,)),
            criterion("inc-sledai", Status.MET, title=text, reason=text, evidence=(ev,)),
            criterion("inc-serology", Status.MET, title=text, reason=text, evidence=(ev, ev)),
            criterion(f"inc-{i}", Status.UNKNOWN, title=text, reason=text, evidence=(ev,)),
            criterion(f"exc-{i}", Status.MET, Kind.EXCLUSION, title=text, reason=text, evidence=(ev,)),
        ]
        for rep in (report(AGE, *results[:4]), report(AGE, *results)):
            details += [c.detail or "" for c in render_cards(rep, TRIAL, show_excluded=True, report_link=REPORT)]
    return details


ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
HREF = re.compile(r"""href\s*=\s*["']?([^"' >]+)""", re.IGNORECASE)
FORBIDDEN = re.compile(r"<(script|img|iframe|svg|h1|h2|blockquote|pre|code|table|object|embed)\b", re.IGNORECASE)


def check(renderer: str, details: list[str], html: list[str]) -> int:
    anchors = 0
    for source, out in zip(details, html, strict=True):
        for tag in ANCHOR.findall(out):
            anchors += 1
            href = (HREF.findall(tag) or [""])[0]
            assert href.startswith(ALLOWED), f"{renderer} made a link {href!r} from:\n{source}"
        assert not FORBIDDEN.search(out), f"{renderer} rendered markup from data:\n{source}\n->\n{out}"
        assert "evil.com" not in out, f"{renderer} shows an undefanged host:\n{out}"
        assert "://" not in re.sub(r'href="[^"]*"', "", out), f"{renderer} shows a URL:\n{out}"
    return anchors


def test_every_card_is_inert_in_react_markdown_and_markdown_it(record_property: Any) -> None:
    plain, hostile_chart = fixture_details()
    hostile_reports = hostile_report_details()
    details = plain + hostile_chart + hostile_reports
    assert len(plain) >= 100, "every fixture renders a card (show_excluded)"
    assert any("evil[.]com" in d.replace("\\", "") for d in hostile_reports), "hostile text reached the cards"
    assert max(len(d) for d in details) <= DETAIL_MAX
    counts = {}
    for name, render in (
        ("react-markdown+remark-gfm+rehype-raw", react_markdown),
        ("markdown-it+linkify", markdown_it),
    ):
        counts[name] = check(name, details, render(details))
    summary = (
        f"cards rendered: {len(details)} x 2 renderers ({len(plain)} fixture cards, {len(hostile_chart)} hostile-chart "
        f"cards, {len(hostile_reports)} hostile-report cards); anchors found: {counts}; "
        f"max fixture detail length: {max(len(d) for d in plain)}"
    )
    record_property("render_counts", summary)
    print(summary)
    assert counts == {"react-markdown+remark-gfm+rehype-raw": 0, "markdown-it+linkify": 0}


def test_the_renderers_do_link_raw_chart_text() -> None:
    """The check above is not vacuous: the same renderers link an unescaped URL, www. host and e-mail."""
    raw = ["see https://evil.com, www.evil.com and phish@evil.com"]
    for name, render in (("react", react_markdown), ("markdown-it", markdown_it)):
        assert len(ANCHOR.findall(render(raw)[0])) == 3, name
