"""The worklist's routes (``/worklist``), an APIRouter installed by `install_worklist`.

Never anonymous: every page but the sign-in form needs a valid session cookie (otherwise a redirect
to the sign-in form); every POST needs the session's CSRF token. See `cds.worklist.auth`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from cds.config import Settings
from cds.service.alerts import AlertPolicy, AlertStore
from cds.service.report_page import PAGE_HEADERS, report_html
from cds.store.database import Database
from cds.worklist import page
from cds.worklist.auth import PasswordHash, Session, Signer, authenticate, parse_users, same_token
from cds.worklist.oidc import OidcClient, OidcError, Transaction
from cds.worklist.reports import report_from_json, trial_info
from cds.worklist.rows import STATUSES, VERDICT_FILTERS, Candidate, matches, ranked, to_csv
from cds.worklist.store import StatusConflict, WorklistStore

log = logging.getLogger("cds.worklist")

SESSION_COOKIE = "cds_worklist"
LOGIN_COOKIE = "cds_worklist_login"
MAX_FORM_BYTES = 8192
FILTERS = ("trial", "verdict", "criterion", "status")

router = APIRouter(prefix="/worklist", include_in_schema=False)


@dataclass
class WorklistContext:
    settings: Settings
    store: WorklistStore
    users: dict[str, PasswordHash]
    clock: Callable[[], float] = time.time
    oidc: OidcClient | None = None
    _signer: Signer | None = field(default=None, init=False)

    def signer(self) -> Signer:
        if self._signer is None:
            secret = self.settings.worklist_session_secret
            key = secret.get_secret_value().encode() if secret else self.store.session_key()
            self._signer = Signer(key)
        return self._signer

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


def install_worklist(
    app: FastAPI, settings: Settings, database: Database, *, clock: Callable[[], float] = time.time
) -> None:
    """Serve ``/worklist`` from this app (its database holds the population runs and the alert state)."""
    policy = AlertPolicy(referral_quiet_days=settings.alert_referral_quiet_days)
    secret = settings.alert_key_secret.get_secret_value() if settings.alert_key_secret else None
    store = WorklistStore(database, AlertStore(database.engine, policy, secret))
    oidc = None
    if settings.worklist_oidc_issuer and settings.worklist_oidc_client_id:
        secret_value = settings.worklist_oidc_client_secret
        oidc = OidcClient(
            issuer=settings.worklist_oidc_issuer,
            client_id=settings.worklist_oidc_client_id,
            client_secret=secret_value.get_secret_value() if secret_value else None,
            allowed_users=frozenset(settings.worklist_oidc_users),
            user_claim=settings.worklist_oidc_user_claim,
            clock=clock,
        )
    app.state.worklist = WorklistContext(settings, store, parse_users(settings.worklist_users), clock, oidc)
    app.include_router(router)


def _ctx(request: Request) -> WorklistContext:
    ctx: WorklistContext = request.app.state.worklist
    return ctx


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + "/worklist"


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**page.HEADERS, **(headers or {})})


def _secure(request: Request, settings: Settings) -> bool:
    base = settings.public_base_url or ""
    return request.url.scheme == "https" or base.startswith("https://")


def _set_cookie(response: Response, request: Request, ctx: WorklistContext, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=_base(request),
        httponly=True,
        samesite="strict",
        secure=_secure(request, ctx.settings),
    )


async def _session(request: Request) -> Session | None:
    ctx = _ctx(request)
    signer = await run_in_threadpool(ctx.signer)
    session = signer.load_session(request.cookies.get(SESSION_COOKIE), ctx.clock())
    allowed = session is not None and (
        session.user in ctx.users or (ctx.oidc is not None and session.user in ctx.oidc.allowed_users)
    )
    if session is not None and not allowed:
        return None  # the account was removed: its sessions end
    return session


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(_base(request) + "/login", status_code=303)


async def _form(request: Request) -> dict[str, str] | None:
    """The url-encoded form of a POST (first value per field), or None if not one or too large."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in parsed.items()}


def _filters(values: dict[str, Any]) -> dict[str, str]:
    out = {k: str(values.get(k) or "")[:100] for k in FILTERS}
    if out["verdict"] not in VERDICT_FILTERS:
        out["verdict"] = ""
    if out["status"] not in STATUSES:
        out["status"] = ""
    return out


def _forbidden(request: Request) -> HTMLResponse:
    return _html(
        page.message_page("Request refused", "The form was stale or not sent by this page. Reload it.", _base(request)),
        403,
    )


# ---------------------------------------------------------------------- sign-in


@router.get("/login")
async def login_form(request: Request) -> Response:
    ctx = _ctx(request)
    signer = await run_in_threadpool(ctx.signer)
    cookie, csrf = signer.login_token(ctx.clock())
    response = _html(page.login_page(_base(request), csrf, accounts=bool(ctx.users), oidc=ctx.oidc is not None))
    _set_cookie(response, request, ctx, LOGIN_COOKIE, cookie, 1800)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    ctx = _ctx(request)
    signer = await run_in_threadpool(ctx.signer)
    form = await _form(request)
    expected = signer.load_login_csrf(request.cookies.get(LOGIN_COOKIE), ctx.clock())
    if form is None or not same_token(form.get("csrf"), expected):
        return _forbidden(request)
    user = form.get("user", "").strip()[:100]
    ok = await run_in_threadpool(authenticate, ctx.users, user, form.get("password", ""))
    if not ok:
        log.warning("worklist sign-in refused", extra={"event": "worklist.login_failed"})
        cookie, csrf = signer.login_token(ctx.clock())
        refused = _html(
            page.login_page(
                _base(request),
                csrf,
                error="Wrong user name or password.",
                accounts=bool(ctx.users),
                oidc=ctx.oidc is not None,
            ),
            401,
        )
        _set_cookie(refused, request, ctx, LOGIN_COOKIE, cookie, 1800)
        return refused
    token, _ = signer.session(user, ctx.clock(), ctx.settings.worklist_session_seconds)
    log.info("worklist sign-in", extra={"event": "worklist.login"})
    response = RedirectResponse(_base(request), status_code=303)
    _set_cookie(response, request, ctx, SESSION_COOKIE, token, ctx.settings.worklist_session_seconds)
    response.delete_cookie(LOGIN_COOKIE, path=_base(request))
    return response


async def _authorized_post(request: Request) -> tuple[Session, dict[str, str]] | Response:
    """The prologue of every signed-in POST: the session (else a redirect to the sign-in form) and
    the url-encoded form carrying the session's CSRF token (else 403). The form is read before the
    session is judged, so the body is always consumed."""
    session = await _session(request)
    form = await _form(request)
    if session is None:
        return _to_login(request)
    if form is None or not same_token(form.get("csrf"), session.csrf):
        return _forbidden(request)
    return session, form


@router.post("/logout")
async def logout(request: Request) -> Response:
    authorized = await _authorized_post(request)
    if isinstance(authorized, Response):
        return authorized
    response = _to_login(request)
    response.delete_cookie(SESSION_COOKIE, path=_base(request))
    return response


# ---------------------------------------------------------------------- the list


async def _candidates(request: Request, filters: dict[str, str]) -> tuple[Any, list[Candidate]]:
    ctx = _ctx(request)
    worklist = await run_in_threadpool(ctx.store.worklist, ctx.now())
    chosen = [c for c in worklist.candidates if matches(c, **filters)]
    return worklist, ranked(chosen)


@router.get("")
async def worklist_view(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    ctx = _ctx(request)
    filters = _filters(dict(request.query_params))
    worklist, chosen = await _candidates(request, filters)
    runs = [r for r in worklist.runs if not filters["trial"] or r.trial == filters["trial"]]
    attritions = [await run_in_threadpool(ctx.store.attrition, r) for r in runs]
    criteria: dict[str, str] = {}
    for run in worklist.runs:
        info = trial_info(run.trial)
        for cid, title in info.criteria:
            if cid not in info.unsettleable:
                criteria.setdefault(cid, title)
    for c in worklist.candidates:
        for cid, title in c.to_verify:
            criteria.setdefault(cid, title)
    audit = await run_in_threadpool(lambda: ctx.store.audit(limit=20))
    html = page.worklist_page(
        base=_base(request),
        user=session.user,
        csrf=session.csrf,
        filters=filters,
        runs=worklist.runs,
        candidates=chosen[: ctx.settings.worklist_max_rows],
        total=len(chosen),
        criteria=sorted(criteria.items()),
        attritions=attritions,
        audit=audit,
        referrals_elsewhere=worklist.referrals_elsewhere,
    )
    return _html(html)


@router.get("/export.csv")
async def export_csv(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    filters = _filters(dict(request.query_params))
    _, chosen = await _candidates(request, filters)
    stamp = _ctx(request).now().strftime("%Y%m%dT%H%M%SZ")
    log.info("worklist CSV export", extra={"event": "worklist.export", "rows": len(chosen)})
    return Response(
        to_csv(chosen),
        media_type="text/csv; charset=utf-8",
        headers={
            **page.HEADERS,
            "Content-Disposition": f'attachment; filename="worklist-{stamp}.csv"',
        },
    )


@router.get("/report/{result_id}")
async def report(request: Request, result_id: int) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    found = await run_in_threadpool(_ctx(request).store.result, result_id)
    if found is None:
        return _html(page.message_page("Report not found", "No such result in the latest runs.", _base(request)), 404)
    trial_id, data = found
    info = trial_info(trial_id)
    return HTMLResponse(report_html(report_from_json(data, info), info), headers=PAGE_HEADERS)


@router.post("/status")
async def change_status(request: Request) -> Response:
    authorized = await _authorized_post(request)
    if isinstance(authorized, Response):
        return authorized
    session, form = authorized
    ctx = _ctx(request)
    base = _base(request)
    server, trial, patient = form.get("server", ""), form.get("trial", ""), form.get("patient", "")
    status = form.get("status", "")
    if status not in STATUSES:
        return _html(page.message_page("Unknown status", f"Choose one of: {', '.join(STATUSES)}.", base), 400)
    worklist = await run_in_threadpool(ctx.store.worklist, ctx.now())
    # a patient id is unique only within its FHIR server: the row is (server, trial, patient)
    if not any(c.fhir_server == server and c.trial == trial and c.patient_id == patient for c in worklist.candidates):
        return _html(page.message_page("Not on the worklist", "This patient is not on the worklist.", base), 404)
    try:
        await run_in_threadpool(
            lambda: ctx.store.set_status(
                fhir_server=server,
                trial=trial,
                patient_id=patient,
                status=status,
                expected=form.get("expected", ""),
                user=session.user,
                now=ctx.now(),
            )
        )
    except StatusConflict as exc:
        return _html(
            page.message_page(
                "Status changed meanwhile",
                f"Someone changed this patient's status to {exc.args[0]} since the page was shown; nothing was "
                "saved. Reload the worklist and try again.",
                base,
            ),
            409,
        )
    kept = _filters({k: v[0] for k, v in parse_qs(form.get("back", "")).items()})
    back = urlencode({k: v for k, v in kept.items() if v})  # only known filters: no open redirect
    return RedirectResponse(base + (f"?{back}" if back else ""), status_code=303)


@router.get("/audit")
async def audit(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    ctx = _ctx(request)
    trial = str(request.query_params.get("trial", ""))[:64]
    patient = str(request.query_params.get("patient", ""))[:64]
    server = request.query_params.get("server")
    server = server[:2000] if server is not None else None
    entries = await run_in_threadpool(
        lambda: ctx.store.audit(fhir_server=server, trial=trial, patient_id=patient, limit=1000)
    )
    return _html(page.audit_page(_base(request), session.user, session.csrf, entries))


# ---------------------------------------------------------------------- OIDC (authorization code + PKCE)

OIDC_COOKIE = "cds_worklist_oidc"
OIDC_SECONDS = 600


def _redirect_uri(request: Request, settings: Settings) -> str:
    root = settings.public_base_url or str(request.base_url).rstrip("/")
    return root + "/worklist/oidc/callback"


@router.get("/oidc/start")
async def oidc_start(request: Request) -> Response:
    ctx = _ctx(request)
    if ctx.oidc is None:
        return _html(page.message_page("Not configured", "OIDC sign-in is not configured.", _base(request)), 404)
    tx = ctx.oidc.new_transaction()
    try:
        url = await ctx.oidc.authorization_url(tx, _redirect_uri(request, ctx.settings))
    except OidcError as exc:
        log.warning("worklist OIDC unavailable", extra={"event": "worklist.oidc_error", "error": str(exc)})
        return _html(page.message_page("Sign-in unavailable", str(exc), _base(request)), 503)
    signer = await run_in_threadpool(ctx.signer)
    cookie = signer.dumps(
        {"k": "o", "state": tx.state, "nonce": tx.nonce, "v": tx.verifier, "exp": int(ctx.clock()) + OIDC_SECONDS}
    )
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        cookie,
        max_age=OIDC_SECONDS,
        path=_base(request) + "/oidc",
        httponly=True,
        samesite="lax",  # the provider's redirect back is a cross-site top-level navigation
        secure=_secure(request, ctx.settings),
    )
    return response


@router.get("/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    ctx = _ctx(request)
    base = _base(request)
    if ctx.oidc is None:
        return _html(page.message_page("Not configured", "OIDC sign-in is not configured.", base), 404)
    signer = await run_in_threadpool(ctx.signer)
    data = signer.loads(request.cookies.get(OIDC_COOKIE), ctx.clock())
    state = request.query_params.get("state")
    code = request.query_params.get("code")
    if data is None or data.get("k") != "o" or not same_token(state, str(data.get("state", ""))):
        return _forbidden(request)
    if not code:
        return _html(page.message_page("Sign-in refused", "The identity provider did not sign you in.", base), 401)
    tx = Transaction(state=str(data["state"]), nonce=str(data.get("nonce", "")), verifier=str(data.get("v", "")))
    try:
        user = await ctx.oidc.sign_in(code, tx, _redirect_uri(request, ctx.settings))
    except OidcError as exc:
        log.warning("worklist OIDC sign-in refused", extra={"event": "worklist.oidc_refused", "error": str(exc)})
        return _html(page.message_page("Sign-in refused", str(exc), base), 403)
    token, _ = signer.session(user, ctx.clock(), ctx.settings.worklist_session_seconds)
    log.info("worklist sign-in (OIDC)", extra={"event": "worklist.login"})
    # A page, not a redirect: after the provider's cross-site redirect, a SameSite=Strict cookie set
    # here would not be sent with a redirected request; the refresh is a same-site navigation.
    response = _html(page.continue_page(base))
    _set_cookie(response, request, ctx, SESSION_COOKIE, token, ctx.settings.worklist_session_seconds)
    response.delete_cookie(OIDC_COOKIE, path=base + "/oidc")
    return response
