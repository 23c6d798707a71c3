"""The full prescreen report as a plain, accessible HTML page (linked from the card).

The card keeps to a verdict line and five bullets; this page holds everything: every criterion with
its result, finding and evidence (values, units, dates, flags, record references), what could not be
read and which records were not usable. It is rendered when the card is issued and served at
``/report/<token>`` (see `cds.service.alerts.AlertStore.save_report`): the token is random and
short-lived, the URL holds no patient id.

The page is made for any browser an EHR opens: ``lang``, a ``<title>``, one ``<h1>``, a table with a
``<caption>``, column headers (``th scope="col"``) and a row header per criterion (``th
scope="row"``); each row is anchored by its criterion id (``#inc-age``). It has no script, no
external resource, and reads in order without its small inline style sheet. Every text from the chart
is HTML-escaped (after the card's own normalisation: invisible characters removed, codes written as
"SNOMED CT 55464009"). Verdict wording and counts are those of the card and of ``cds screen``
(`cards.verdict`).
"""

from __future__ import annotations

from html import escape

from cards.markdown import humanize_codes, plain
from cards.render import FLAG_LABELS, TYPE_LABELS, trial_label
from cards.trial import TrialLike
from cards.verdict import against, to_verify, verdict_label
from cds.engine.model import CriterionResult, Evidence, Kind, Report, Status

#: Response headers of the page: nothing loads, nothing is cached, the token never leaves as a Referer.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem;line-height:1.4;color:#111}
table{border-collapse:collapse;width:100%}caption{text-align:left;font-weight:600;padding:.5rem 0}
th,td{border:1px solid #999;padding:.35rem .5rem;vertical-align:top;text-align:left}
thead th{background:#eee}tbody th{font-weight:600}.id{display:block;font-weight:400;color:#444}
ul{margin:0;padding-left:1.1rem}.against{background:#fde8e8}.verify{background:#fff6d6}
"""

_RESULT = {
    ("against", Kind.INCLUSION): "Not met",
    ("against", Kind.EXCLUSION): "Present",
    ("verify", Kind.INCLUSION): "To verify",
    ("verify", Kind.EXCLUSION): "To verify",
    ("favour", Kind.INCLUSION): "Met",
    ("favour", Kind.EXCLUSION): "Absent",
    ("judgment", Kind.INCLUSION): "Investigator's judgment",
    ("judgment", Kind.EXCLUSION): "Investigator's judgment",
}
_ORDER = {"against": 0, "verify": 1, "judgment": 2, "favour": 3}


def _text(value: object) -> str:
    """Chart text for HTML: one visible line, codes humanized, HTML-escaped."""
    return escape(humanize_codes(plain(value)))


def _group(result: CriterionResult) -> str:
    if result.fails:
        return "against"
    if result.status is Status.UNKNOWN:
        return "verify" if result.settleable else "judgment"
    return "favour"


def _evidence(ev: Evidence) -> str:
    text = _text(ev.description)
    if ev.value is not None and ev.value not in ev.description:
        shown = f"{ev.value} {ev.unit}" if ev.unit else ev.value
        text += f": {_text(shown)}"
    shown_text = humanize_codes(f"{ev.value} {ev.unit or ''}".strip()) if ev.value is not None else None
    if ev.original and humanize_codes(ev.original) not in (shown_text, ev.value, humanize_codes(ev.description)):
        text += f" (recorded as {_text(ev.original)})"
    if ev.date:
        text += f", {_text(ev.date)}"
    if ev.flags:
        text += " [" + ", ".join(escape(FLAG_LABELS.get(f, f.value)) for f in ev.flags) + "]"
    return f'{text} <span class="id">{_text(ev.reference)}</span>'


_ITEM_STATUS = ((Status.MET, "found"), (Status.UNKNOWN, "not found / to verify"), (Status.NOT_MET, "absent"))


def _items(result: CriterionResult) -> str:
    """The computed items behind a result (SLICC 2012 criteria, SLEDAI-2K descriptors) by status,
    each with its finding and evidence, so the investigator sees what was found and what is missing."""
    if not result.items:
        return ""
    parts = []
    for status, label in _ITEM_STATUS:
        rows = [i for i in result.items if i.status is status]
        if not rows:
            continue
        lis = "".join(
            f"<li>{_text(i.label)} ({_text(i.group)}"
            + (f", {i.points} points" if i.points and status is Status.MET else "")
            + f"): {_text(i.reason)}"
            + ("<ul>" + "".join(f"<li>{_evidence(ev)}</li>" for ev in i.evidence) + "</ul>" if i.evidence else "")
            + "</li>"
            for i in rows
        )
        parts.append(f"<p>{escape(label)}:</p><ul>{lis}</ul>")
    return f'<div class="items">{"".join(parts)}</div>'


def _row(result: CriterionResult) -> str:
    group = _group(result)
    kind = "inclusion" if result.kind is Kind.INCLUSION else "exclusion"
    evidence = "".join(f"<li>{_evidence(ev)}</li>" for ev in result.evidence)
    css = {"against": ' class="against"', "verify": ' class="verify"'}.get(group, "")
    return (
        f'<tr id="{escape(result.id)}"{css}>'
        f"<td>{_RESULT[(group, result.kind)]}</td>"
        f'<th scope="row">{_text(result.title or result.id)} ({kind})<span class="id">{escape(result.id)}</span></th>'
        f"<td>{_text(result.reason)}{_items(result)}</td>"
        f"<td>{'<ul>' + evidence + '</ul>' if evidence else '—'}</td>"
        "</tr>"
    )


def report_html(report: Report, trial: TrialLike) -> str:
    """The whole page (a complete HTML document)."""
    label = verdict_label(report)
    favour = sum(1 for r in report.criteria if r.favourable)
    head = f"{trial.id} prescreen report: {label}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="robots" content="noindex">',
        '<link rel="icon" href="data:,">',
        f"<title>{escape(head)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>Prescreen for clinical trial {escape(trial_label(trial))}</h1>",
        f"<p><strong>{escape(label)}.</strong> Patient {_text(report.patient)}, as of {report.as_of.isoformat()}. "
        "This is not an eligibility decision; the study team confirms eligibility.</p>",
        f"<p>Of {len(report.criteria)} criteria: {favour} in the patient's favour (inclusions met, exclusions "
        f"absent), {len(to_verify(report))} to verify, {len(against(report))} against; the investigator's "
        "judgment always applies.</p>",
    ]
    if report.incomplete:
        names = ", ".join(f"{TYPE_LABELS.get(t, t)} ({t})" for t in report.incomplete)
        parts.append(
            f"<p><strong>Data incomplete:</strong> could not read {_text(names)}. "
            "Criteria depending on them are to verify.</p>"
        )
    ordered = sorted(report.criteria, key=lambda r: _ORDER[_group(r)])
    parts += [
        "<table>",
        "<caption>Criteria: against first, then to verify, then in the patient's favour</caption>",
        '<thead><tr><th scope="col">Result</th><th scope="col">Criterion</th><th scope="col">Finding</th>'
        '<th scope="col">Evidence</th></tr></thead>',
        "<tbody>",
        *(_row(r) for r in ordered),
        "</tbody>",
        "</table>",
    ]
    if report.data_issues:
        parts.append("<h2>Records not used</h2><ul>")
        parts += [f"<li>{_text(d.reference)}: {_text(d.problem)}</li>" for d in report.data_issues]
        parts.append("</ul>")
    parts += [
        f'<p><a href="{escape(trial.url)}">{escape(trial.id)} on ClinicalTrials.gov</a></p>',
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def expired_html() -> str:
    """The page for an unknown or expired link (no detail on which)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "<title>Prescreen report link expired</title></head><body><main><h1>This report link has expired</h1>"
        "<p>Report links work for a short time only. Reopen the patient's chart to get a new card and link.</p>"
        "</main></body></html>\n"
    )
