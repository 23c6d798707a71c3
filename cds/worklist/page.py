"""The worklist's HTML: sign-in form, the list with its filters and status forms, the attrition
chart (server-rendered SVG bars) and the audit trail.

No script, no external resource: the one style sheet is inline and allowed by its hash in the
Content-Security-Policy (`HEADERS`), nothing else runs or loads. Every text that comes from data
(patient ids, criterion titles, user names, run ids) is HTML-escaped; nothing from a chart becomes a
link (the only links are built from numeric result ids and fixed paths).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from urllib.parse import urlencode

from cds.worklist.rows import (
    LIKELY,
    POSSIBLE,
    STATUSES,
    VERDICT_FILTERS,
    Attrition,
    Candidate,
)
from cds.worklist.store import AuditEntry, RunSummary

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.2rem;color:#111;line-height:1.35}"
    "table{border-collapse:collapse;margin:.5rem 0 1.2rem}caption{text-align:left;font-weight:600;padding:.3rem 0}"
    "th,td{border:1px solid #aaa;padding:.3rem .45rem;text-align:left;vertical-align:top}thead th{background:#eee}"
    "form.inline{display:flex;gap:.3rem;align-items:center;margin:0}fieldset{border:1px solid #ccc;margin:0 0 1rem}"
    "fieldset label{margin-right:.8rem}.note{color:#444}.ref{background:#e6f0ff;padding:0 .3rem;border-radius:3px}"
    "header{display:flex;justify-content:space-between;align-items:center}.error{color:#a00;font-weight:600}"
    "svg text{font-size:12px;font-family:system-ui,sans-serif}ul{margin:0;padding-left:1.1rem}"
    "main.login{max-width:24rem}main.login label{display:block;margin:.6rem 0 .2rem}"
    ".visually-hidden{position:absolute;left:-9999px}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

#: Response headers of every worklist page.
HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex",
}

VERDICT_LABEL = {LIKELY: "Likely candidate", POSSIBLE: "Possible candidate"}


def _doc(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">'
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{STYLE}</style></head>'
        f"<body>{body}</body></html>\n"
    )


def login_page(base: str, csrf: str, *, error: str = "", accounts: bool = True, oidc: bool = False) -> str:
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    if oidc:
        message += f'<p><a id="oidc" href="{escape(base)}/oidc/start">Sign in with your organisation</a></p>'
    if not accounts:
        message += '<p class="note">No local worklist account is configured (CDS_WORKLIST_USERS).</p>'
    body = (
        '<main class="login"><h1>Prescreen worklist: sign in</h1>'
        f"{message}"
        f'<form method="post" action="{escape(base)}/login">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<label for="user">User name</label><input id="user" name="user" autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password" required>'
        '<p><button type="submit">Sign in</button></p></form></main>'
    )
    return _doc("Sign in: prescreen worklist", body)


def message_page(title: str, text: str, base: str) -> str:
    return _doc(
        title,
        f'<main><h1>{escape(title)}</h1><p>{escape(text)}</p><p><a href="{escape(base)}">'
        "Back to the worklist</a></p></main>",
    )


def continue_page(base: str) -> str:
    """Shown after an OIDC sign-in: a same-site refresh to the worklist (and a link)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={escape(base)}"><link rel="icon" href="data:,">'
        f"<title>Signed in</title><style>{STYLE}</style></head><body><main><h1>Signed in</h1>"
        f'<p><a href="{escape(base)}">Continue to the worklist</a></p></main></body></html>\n'
    )


def _options(values: Iterable[tuple[str, str]], selected: str) -> str:
    return "".join(
        f'<option value="{escape(v)}"{" selected" if v == selected else ""}>{escape(label)}</option>'
        for v, label in values
    )


def _verdict(c: Candidate) -> str:
    if c.verdict == LIKELY:
        return "Likely candidate: all checkable criteria met"
    if c.verdict == POSSIBLE:
        return f"Possible candidate: {len(c.to_verify)} to verify"
    return f"Not a candidate: {c.against} against"


def _status_form(c: Candidate, base: str, csrf: str, back: str) -> str:
    field = f"status-{c.result_id}"
    return (
        f'<form class="inline" method="post" action="{escape(base)}/status">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="server" value="{escape(c.fhir_server)}">'
        f'<input type="hidden" name="trial" value="{escape(c.trial)}">'
        f'<input type="hidden" name="patient" value="{escape(c.patient_id)}">'
        f'<input type="hidden" name="expected" value="{escape(c.status)}">'
        f'<input type="hidden" name="back" value="{escape(back)}">'
        f'<label class="visually-hidden" for="{field}">New status</label>'
        f'<select id="{field}" name="status">{_options(((s, s) for s in STATUSES), c.status)}</select>'
        '<button type="submit">Save</button></form>'
    )


def _row(rank: int, c: Candidate, base: str, csrf: str, back: str) -> str:
    verify = (
        "<ul>"
        + "".join(f"<li>{escape(title)} <small>({escape(cid)})</small></li>" for cid, title in c.to_verify)
        + "</ul>"
        if c.to_verify
        else "—"
    )
    referred = f'<span class="ref">referred by clinician</span> {c.referred_on.isoformat()}' if c.referred_on else ""
    return (
        f'<tr id="r{c.result_id}" data-patient="{escape(c.patient_id)}" data-trial="{escape(c.trial)}" '
        f'data-server="{escape(c.fhir_server)}">'
        f"<td>{rank}</td>"
        f'<th scope="row"><a href="{escape(base)}/report/{c.result_id}">{escape(c.patient_id)}</a>'
        f' <small class="server">{escape(c.fhir_server)}</small></th>'
        f"<td>{escape(c.trial)}</td><td>{escape(_verdict(c))}</td><td>{verify}</td><td>{referred}</td>"
        f'<td class="status">{escape(c.status)} <small>(ResearchSubject: {escape(c.research_subject_status)})</small>'
        f"</td><td>{_status_form(c, base, csrf, back)}</td></tr>"
    )


def attrition_svg(a: Attrition) -> str:
    """Horizontal bars per criterion: patients remaining after it (and every earlier one), with the
    numbers it rules out and leaves to verify. Text is escaped; sizes are computed numbers only."""
    label_w, bar_w, row_h = 330, 360, 22
    height = row_h * (len(a.rows) + 1) + 8
    width = label_w + bar_w + 230
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-labelledby="att-{escape(a.run_id)}">',
        f'<title id="att-{escape(a.run_id)}">Attrition per criterion, run {escape(a.run_id)} ({escape(a.trial)})'
        "</title>",
        f'<text x="0" y="15">All patients in the run</text>'
        f'<rect x="{label_w}" y="4" width="{bar_w}" height="14" fill="#4a7bb7"></rect>'
        f'<text x="{label_w + bar_w + 8}" y="15">{a.patients}</text>',
    ]
    for i, r in enumerate(a.rows, start=1):
        y = i * row_h
        w = round(bar_w * r.remaining / a.patients) if a.patients else 0
        title = r.title if len(r.title) <= 48 else r.title[:47] + "…"
        parts.append(
            f'<text x="0" y="{y + 15}">{escape(title)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w}" height="14" fill="#4a7bb7"></rect>'
            f'<text x="{label_w + bar_w + 8}" y="{y + 15}">{r.remaining} left, −{r.against}, {r.to_verify} to verify'
            "</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def attrition_table(a: Attrition) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(r.title)} <small>({escape(r.id)}, {escape(r.kind)})</small></th>'
        f"<td>{r.against}</td><td>{r.to_verify}</td><td>{r.remaining}</td></tr>"
        for r in a.rows
    )
    return (
        f'<table class="attrition"><caption>Attrition per criterion: run {escape(a.run_id)}, {escape(a.trial)}, '
        f'{a.patients} patients</caption><thead><tr><th scope="col">Criterion</th><th scope="col">Rules out'
        '</th><th scope="col">To verify</th><th scope="col">Remaining</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


UNKNOWN_SERVER_TEXT = "unknown (recorded before statuses were kept per server)"


def audit_table(entries: Sequence[AuditEntry], caption: str) -> str:
    if not entries:
        return f'<p class="note">{escape(caption)}: no changes yet.</p>'
    rows = "".join(
        f"<tr><td>{_when(e.at)}</td><td>{escape(e.user)}</td><td>{escape(e.trial)}</td>"
        f"<td>{escape(e.patient_id)}</td><td>{escape(e.old_value or '')} → {escape(e.new_value or '')}</td>"
        f"<td>{escape(e.fhir_server) if e.fhir_server else UNKNOWN_SERVER_TEXT}</td></tr>"
        for e in entries
    )
    return (
        f'<table class="audit"><caption>{escape(caption)}</caption><thead><tr><th scope="col">When (UTC)</th>'
        '<th scope="col">Who</th><th scope="col">Trial</th><th scope="col">Patient</th><th scope="col">Status change'
        f'</th><th scope="col">FHIR server</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _when(at: datetime) -> str:
    return escape(at.strftime("%Y-%m-%d %H:%M:%S"))


def _header(base: str, user: str, csrf: str) -> str:
    return (
        f"<header><h1>Prescreen worklist</h1><div>Signed in as <strong>{escape(user)}</strong> "
        f'<form class="inline" method="post" action="{escape(base)}/logout">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}"><button type="submit">Sign out</button></form>'
        "</div></header>"
    )


def worklist_page(
    *,
    base: str,
    user: str,
    csrf: str,
    filters: Mapping[str, str],
    runs: Sequence[RunSummary],
    candidates: Sequence[Candidate],
    total: int,
    criteria: Sequence[tuple[str, str]],
    attritions: Sequence[Attrition],
    audit: Sequence[AuditEntry],
    referrals_elsewhere: int,
) -> str:
    query = urlencode({k: v for k, v in filters.items() if v})
    trials = sorted({r.trial for r in runs})
    trial_options = _options([("", "All trials"), *((t, t) for t in trials)], filters["trial"])
    form = (
        f'<form method="get" action="{escape(base)}"><fieldset><legend>Filters</legend>'
        f'<label>Trial <select name="trial">{trial_options}'
        "</select></label>"
        f'<label>Verdict <select name="verdict">{_options([("", "All"), *VERDICT_FILTERS.items()], filters["verdict"])}'
        "</select></label>"
        f'<label>Criterion to verify <select name="criterion">'
        f"{_options([('', 'Any'), *criteria], filters['criterion'])}</select></label>"
        f'<label>Status <select name="status">{_options([("", "Any"), *((s, s) for s in STATUSES)], filters["status"])}'
        "</select></label>"
        '<button type="submit">Filter</button></fieldset></form>'
    )
    runs_list = (
        "<ul>"
        + "".join(
            f"<li>{escape(r.trial)}: run {escape(r.id)} of {escape(r.fhir_server)}, {r.patients} patients screened "
            f"as of {r.as_of.isoformat()}, "
            f"completed {_when(r.completed_at)} UTC</li>"
            for r in runs
        )
        + "</ul>"
        if runs
        else '<p class="note">No complete population run yet (cds population).</p>'
    )
    shown = (
        f"{len(candidates)} of {total} patients shown (ranked: likely before possible, fewer to verify first)"
        if total > len(candidates)
        else f"{total} patients (ranked: likely before possible, fewer to verify first)"
    )
    rows = "".join(_row(i, c, base, csrf, query) for i, c in enumerate(candidates, start=1))
    table = (
        f'<table id="worklist"><caption>{escape(shown)}</caption><thead><tr><th scope="col">#</th>'
        '<th scope="col">Patient (report)</th><th scope="col">Trial</th><th scope="col">Prescreen</th>'
        '<th scope="col">To verify</th><th scope="col">Referral</th><th scope="col">Status</th>'
        f'<th scope="col">Change status</th></tr></thead><tbody>{rows}</tbody></table>'
    )
    elsewhere = (
        f'<p class="note">{referrals_elsewhere} clinician referral(s) concern patients not in the latest runs; '
        "the service stores no patient id with a referral: open them from the EHR.</p>"
        if referrals_elsewhere
        else ""
    )
    charts = "".join(
        f"<section><h3>{escape(a.trial)}</h3>{attrition_svg(a)}{attrition_table(a)}</section>" for a in attritions
    )
    charts = charts or '<p class="note">No run.</p>'
    csv_href = f"{base}/export.csv" + (f"?{query}" if query else "")
    body = (
        _header(base, user, csrf)
        + "<main>"
        + '<p class="note">Prescreen results are not eligibility decisions: the study team confirms eligibility.</p>'
        + f"<h2>Runs</h2>{runs_list}{form}"
        + f'<p><a id="csv" href="{escape(csv_href)}" download>Download CSV</a> · '
        + f'<a href="{escape(base)}/audit">Full audit trail</a></p>'
        + f"{table}{elsewhere}"
        + f"<h2>Recent changes</h2>{audit_table(audit, 'Latest status changes')}"
        + f"<h2>Attrition per criterion</h2>{charts}"
        + "</main>"
    )
    return _doc("Prescreen worklist", body)


def audit_page(base: str, user: str, csrf: str, entries: Sequence[AuditEntry]) -> str:
    body = (
        _header(base, user, csrf)
        + f'<main><p><a href="{escape(base)}">Back to the worklist</a></p>'
        + audit_table(entries, "Audit trail: every status change, newest first")
        + "</main>"
    )
    return _doc("Worklist audit trail", body)
