"""Service settings, read from environment variables with the prefix ``CDS_``.

Every field carries a description; `settings_markdown()` renders the table that is committed as
``cds/service/SETTINGS.md`` (a test checks that the file matches, so the two cannot drift).

List settings accept either JSON (``CDS_CORS_ORIGINS='["https://a","https://b"]'``) or a
comma-separated string (``CDS_CORS_ORIGINS=https://a,https://b``).
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

ENV_PREFIX = "CDS_"

DEFAULT_CORS_ORIGINS = ("https://sandbox.cds-hooks.org",)

# The public CDS Hooks sandbox (https://sandbox.cds-hooks.org) signs its calls with ES384, this
# issuer and keys published at this jku. Its private key is public: trust it in development only
# (`auth_trust_sandbox`).
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
DEFAULT_CORS_ORIGIN_REGEX = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

#: The one default port of the CDS Hooks service (`cds serve`, the README, the docs). The HAPI FHIR
#: sandbox (`cds sandbox`) listens on 8090.
DEFAULT_PORT = 8000
#: Where `cds serve` listens by default (loopback only) and with how many worker processes.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_WORKERS = 1
DEFAULT_SNOOZE_DAYS_BY_REASON = {"patient-declined": 180, "already-screened": 90, "will-refer": 7}


class Settings(BaseSettings):
    """Runtime settings of the CDS Hooks service."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    as_of: date | None = Field(
        default=None,
        description="Screening date (T0) used for every evaluation, ISO date. Unset: today's date at request time.",
    )
    database_url: str = Field(
        default="sqlite:///cds-feedback.sqlite3",
        description="SQLAlchemy URL of the service's database: feedback and the JWT ids seen (replay "
        "protection). A SQLite file by default (relative to the working directory; one machine). Several "
        "replicas need one shared PostgreSQL (postgresql://user:password@host/db, psycopg 3 driver).",
    )
    database_migrate: bool = Field(
        default=True,
        description="Apply the database migrations (Alembic) at start-up; concurrent starts take turns. "
        "False: run `cds db upgrade` before starting the service.",
    )
    database_connect_timeout: float = Field(
        default=3.0,
        gt=0,
        description="Seconds allowed to connect to the database (or to wait for a pooled connection).",
    )
    database_pool_size: int = Field(
        default=5, ge=1, le=100, description="Database connections kept per worker process (PostgreSQL)."
    )
    public_base_url: str | None = Field(
        default=None,
        description="The service's public base URL as EHRs call it (scheme://host[:port][/prefix], e.g. "
        "https://cds.example.org behind a TLS proxy). JWT `aud` must equal it plus the path called. "
        "Unset: the URL the request arrived at (scheme and Host header as seen by the service).",
    )
    auth_required: bool = Field(
        default=True,
        description="Require a signed JWT (Authorization: Bearer) from the CDS client on discovery, service "
        "and feedback calls (not on /health). Only `cds demo` and tests turn it off.",
    )
    auth_issuers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Allowed JWT `iss` values (exact). Empty: no issuer is trusted (every call is 401 while "
        "auth is required).",
    )
    auth_jwks_file: str | None = Field(
        default=None,
        description='Path of a JWKS file (JSON {"keys": [...]}) with the EC P-384 / RSA (>= 2048 bit) public '
        "keys trusted for tokens without `jku`; re-read when it changes. Keys need a `kid`.",
    )
    auth_jku_allowed: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URLs (or base URLs, matched like the FHIR allow-list) from which a token's `jku` JWKS "
        "may be fetched. A token whose `jku` is not on this list is refused.",
    )
    auth_tenants: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Allowed JWT `tenant` values. Empty: `tenant` is not checked.",
    )
    auth_trust_sandbox: bool = Field(
        default=False,
        description=f"DEVELOPMENT ONLY: trust the public CDS Hooks sandbox (adds issuer {SANDBOX_ISSUER} and "
        f"jku {SANDBOX_JKU}; its private key is public, anyone can mint its tokens).",
    )
    auth_clock_skew: float = Field(
        default=30.0, ge=0, le=300, description="Seconds of clock skew tolerated on `exp`, `iat` and `nbf`."
    )
    auth_max_token_lifetime: float = Field(
        default=600.0,
        gt=0,
        le=3600,
        description="Longest accepted token lifetime in seconds (`exp` - `iat`, and `exp` - now); "
        "used JWT ids (`jti`) are remembered that long, in the database (shared by every worker and replica).",
    )
    auth_jwks_cache_seconds: float = Field(
        default=3600.0, gt=0, description="Seconds a JWKS fetched from a `jku` is used before it is fetched again."
    )
    auth_jwks_min_refresh_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Least seconds between two fetches of one `jku` (an unknown `kid` triggers a refresh at most "
        "this often).",
    )
    auth_jwks_timeout: float = Field(default=2.0, gt=0, description="Seconds allowed for fetching a JWKS.")
    fhir_timeout: float = Field(
        default=2.0,
        gt=0,
        description="Seconds allowed for one FHIR HTTP request as a whole (connect, send, wait, read the body).",
    )
    fhir_connect_timeout: float = Field(
        default=1.0, gt=0, description="Seconds allowed to open a connection to the FHIR server."
    )
    fhir_deadline: float = Field(
        default=3.0,
        gt=0,
        description="Seconds allowed for all FHIR fetching of one hook call, paging included; "
        "what is not read by then counts as unobtainable.",
    )
    fhir_page_size: int = Field(default=200, ge=1, description="`_count` sent with every FHIR search (page size).")
    fhir_max_pages: int = Field(
        default=10,
        ge=1,
        description="Most pages read per search (first page included); more pages mark the resource type incomplete.",
    )
    fhir_max_resources: int = Field(
        default=5000,
        ge=1,
        description="Most resources kept per search; more mark the resource type incomplete.",
    )
    fhir_max_connections: int = Field(
        default=32, ge=1, description="Size of the shared, pooled HTTP connection pool to FHIR servers."
    )
    fhir_allowed_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="FHIR base URLs the service may read from (scheme, host, port exact; path prefix on a "
        "segment boundary). A request naming another fhirServer is refused with 400 before any "
        "connection. Empty: the service never fetches (prefetch only; missing required data is 412). "
        "`*`: any server (development only, logged as a warning).",
    )
    fhir_max_response_bytes: int = Field(
        default=20_000_000, ge=1000, description="Largest FHIR response body read (bytes); larger is a FHIR error."
    )
    require_all_data: bool = Field(
        default=False,
        description="If true, any unobtainable resource type answers 412. If false, only Patient "
        "and Condition are required; others are marked incomplete on the card.",
    )
    enabled_trials: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Trials served, by id (any case, e.g. NCT04582136): one CDS service `<trial-id>-prescreen` "
        "each, in discovery. Empty: every registered trial (`cds.trials.REGISTERED`). An unknown id stops the "
        "service at start-up.",
    )
    show_excluded_card: bool = Field(
        default=False,
        description="Show a quiet 'not a candidate' info card for excluded patients instead of no card.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CORS_ORIGINS),
        description="Browser origins allowed by CORS (the CDS Hooks sandbox by default).",
    )
    cors_origin_regex: str = Field(
        default=DEFAULT_CORS_ORIGIN_REGEX,
        description="Regular expression of further allowed origins (localhost on any port by default). Empty: none.",
    )
    max_request_bytes: int = Field(
        default=20_000_000,
        ge=1000,
        description="Largest accepted request body (bytes), enforced while reading; larger is 400.",
    )
    max_json_depth: int = Field(
        default=64, ge=8, le=500, description="Deepest JSON nesting accepted in requests and FHIR responses."
    )
    request_read_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to receive a request body; slower is 400."
    )
    request_deadline: float = Field(
        default=10.0,
        gt=0,
        description="Seconds allowed for a whole hook call from its arrival: body, decoding, FHIR fetching, "
        "waiting for a slot and the engine. Past it the call is answered 503 with Retry-After (never as "
        "'not a candidate').",
    )
    large_body_bytes: int = Field(
        default=1_000_000,
        ge=1000,
        description="A request body larger than this (declared or received) is 'large': it needs a large-body slot.",
    )
    max_concurrent_large_bodies: int = Field(
        default=1,
        ge=1,
        description="Large request bodies read, decoded and evaluated at once per worker process (bounds memory; "
        "the work is CPU-bound, so one at a time also finishes each soonest); others wait in a queue.",
    )
    max_concurrent_evaluations: int = Field(
        default=2,
        ge=1,
        description="Engine evaluations running at once per worker process (each in a thread); others wait.",
    )
    max_queued: int = Field(
        default=32,
        ge=0,
        description="Requests waiting for a slot of one kind per worker process; one more is answered 503 at once.",
    )
    queue_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait for a slot (within the request deadline); then 503 with Retry-After.",
    )
    retry_after: int = Field(default=2, ge=1, description="Seconds sent in Retry-After with a 503.")
    log_level: LogLevel = Field(default="INFO", description="Level of the JSON logs of the service.")
    alert_snooze_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        description="Days a card dismissed with 'overridden' feedback stays away for that patient and trial "
        "(when its override reason has no period of its own).",
    )
    alert_snooze_days_by_reason: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_SNOOZE_DAYS_BY_REASON),
        description="Snooze period per override reason code (JSON object, e.g. "
        '{"patient-declined": 180}); the longest applies when several reasons are given.',
    )
    alert_referral_quiet_days: int = Field(
        default=365,
        ge=0,
        description="Days after 'accepted' feedback (referral made) during which the prescreen card is replaced "
        "by a quiet 'referred on <date>' card.",
    )
    alert_card_issue_days: int = Field(
        default=90,
        ge=1,
        description="Days a card uuid stays tied to its (hashed) patient, i.e. how late feedback can still snooze.",
    )
    alert_key_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the HMAC that turns fhirServer + patient id into the stored patient key. Unset: a "
        "random key created once in the database (shared by every replica using it).",
    )
    report_link_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 86400,
        description="Lifetime of the card's link to the full report page (an opaque token; no patient id in the URL).",
    )
    report_link_type: Literal["absolute", "smart"] = Field(
        default="absolute",
        description="CDS Hooks link type of the report link: 'absolute', or 'smart' where the EHR launches card "
        "links as SMART apps (it then adds its launch parameters, which the page ignores).",
    )
    population_dir: str = Field(
        default="cds-population",
        description="Directory of `cds population` runs (state, exported NDJSON, partitions, results), relative "
        "to the working directory. Workers of a remote Dask scheduler must see it at the same path.",
    )
    bulk_export_timeout: float = Field(
        default=3600.0, gt=0, description="Seconds `cds population` waits for a FHIR Bulk Data export to complete."
    )
    bulk_poll_max_interval: float = Field(
        default=30.0,
        gt=0,
        description="Longest pause in seconds between two polls of a bulk export status URL (backoff cap, "
        "also for a 202's Retry-After; a 429/503's Retry-After is honoured up to 4 times this).",
    )
    bulk_http_timeout: float = Field(
        default=60.0, gt=0, description="Seconds allowed per HTTP read during a bulk export (kick-off, poll, download)."
    )
    bulk_max_file_bytes: int = Field(
        default=2_000_000_000, ge=1000, description="Largest bulk export output file downloaded (bytes); larger fails."
    )
    population_partition_bytes: int = Field(
        default=16_000_000,
        ge=1000,
        description="Target size of one screening partition (bytes of NDJSON); the partition count is at least "
        "4 per worker.",
    )
    bulk_client_id: str | None = Field(
        default=None,
        description="SMART Backend Services client id of `cds population` (with CDS_BULK_PRIVATE_KEY): the bulk "
        "export is then authorized with a client_credentials token (private_key_jwt). Unset: no authorization.",
    )
    bulk_private_key: str | None = Field(
        default=None,
        description="Path of the client's private key file for SMART Backend Services (unencrypted PEM, or a JWK / "
        "JWKS holding one private key; RSA signs RS384, EC P-384 signs ES384). The key is never logged or stored.",
    )
    bulk_key_id: str | None = Field(
        default=None,
        description="`kid` of the client assertion (the key id registered with the server's authorization server); "
        "default: the JWK's kid, else the RFC 7638 thumbprint of the public key.",
    )
    bulk_token_url: str | None = Field(
        default=None,
        description="Token endpoint for SMART Backend Services; default: token_endpoint of "
        "<fhir server>/.well-known/smart-configuration.",
    )
    worklist_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Local accounts of the coordinators' worklist (/worklist), `user:<scrypt hash>` entries made by "
        "`cds worklist hash-password` (never a plaintext password). Empty: nobody can sign in.",
    )
    worklist_session_secret: SecretStr | None = Field(
        default=None,
        description="Key signing worklist session cookies. Unset: a random key created once in the database "
        "(shared by workers and replicas).",
    )
    worklist_session_seconds: int = Field(
        default=8 * 3600, ge=300, le=7 * 86400, description="Lifetime of a worklist sign-in (seconds)."
    )
    worklist_oidc_issuer: str | None = Field(
        default=None,
        description="OIDC issuer for worklist sign-in (authorization code + PKCE; https). Unset: local accounts only.",
    )
    worklist_oidc_client_id: str | None = Field(default=None, description="OIDC client id of the worklist.")
    worklist_oidc_client_secret: SecretStr | None = Field(
        default=None, description="OIDC client secret (confidential client, HTTP Basic). Unset: a public client."
    )
    worklist_oidc_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Users allowed to sign in with OIDC (values of the user claim). Empty: nobody.",
    )
    worklist_oidc_user_claim: str = Field(
        default="email", description="ID token claim naming the worklist user (e.g. email, preferred_username, sub)."
    )
    worklist_max_rows: int = Field(
        default=500, ge=10, le=100_000, description="Rows shown on the worklist page (the CSV export has every row)."
    )

    @field_validator(
        "fhir_allowed_servers",
        "cors_origins",
        "auth_issuers",
        "auth_jku_allowed",
        "auth_tenants",
        "worklist_users",
        "worklist_oidc_users",
        "enabled_trials",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("fhir_allowed_servers", "auth_jku_allowed")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        from cds.fhir.urls import UrlAllowList

        UrlAllowList(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("worklist_users")
    @classmethod
    def _accounts(cls, value: list[str]) -> list[str]:
        from cds.worklist.auth import parse_users

        parse_users(value)  # raises ValueError naming the bad entry's user
        return value

    @field_validator("enabled_trials")
    @classmethod
    def _trials(cls, value: list[str]) -> list[str]:
        from cds.trials import normalize

        return list(dict.fromkeys(normalize(t) for t in value))  # UnknownTrial (a ValueError) names the id

    @property
    def trial_ids(self) -> tuple[str, ...]:
        """The registry keys of the trials served: `enabled_trials`, or every registered trial."""
        from cds.trials import REGISTERED

        return tuple(self.enabled_trials) or REGISTERED

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from cds.fhir.urls import parse_url

        parse_url(value.strip())
        return value.strip().rstrip("/")

    @property
    def trusted_issuers(self) -> list[str]:
        return [*self.auth_issuers, SANDBOX_ISSUER] if self.auth_trust_sandbox else list(self.auth_issuers)

    @property
    def trusted_jku(self) -> list[str]:
        return [*self.auth_jku_allowed, SANDBOX_JKU] if self.auth_trust_sandbox else list(self.auth_jku_allowed)

    @field_validator("alert_snooze_days_by_reason")
    @classmethod
    def _periods(cls, value: dict[str, int]) -> dict[str, int]:
        for reason, days in value.items():
            if not reason.strip() or not 0 <= days <= 3650:
                raise ValueError(f"bad snooze period {reason!r}: {days} (days must be 0-3650)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


def setting_default(name: str) -> Any:
    """The default of the setting `name`, as the settings model defines it (the one place defaults
    live: code that takes a setting as a parameter uses this for its own default)."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


class SettingsError(Exception):
    """A setting could not be read: the message is one line naming the environment variable."""


def load_settings(**overrides: Any) -> Settings:
    """`Settings()` from the environment, or `SettingsError` with one line per bad variable."""
    try:
        return Settings(**overrides)
    except PydanticSettingsError as exc:  # a value that is not even JSON where JSON is needed
        found = re.search(r'field "(\w+)"', str(exc))
        env = f"{ENV_PREFIX}{found.group(1).upper()}" if found else "a CDS_ variable"
        raise SettingsError(f"invalid setting {env}: not valid JSON") from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            env = f"{ENV_PREFIX}{name.upper()}"
            lines.append(f"invalid setting {env}: {error['msg']}")
        raise SettingsError("; ".join(lines)) from None


def _default_text(name: str) -> str:
    value = setting_default(name)
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if value else "(empty)"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_markdown() -> str:
    """The markdown settings table (content of ``cds/service/SETTINGS.md``)."""
    lines = [
        "# Service settings",
        "",
        "<!-- Generated by cds.config.settings_markdown(); do not edit by hand. -->",
        "",
        f"Environment variables (prefix `{ENV_PREFIX}`). Lists take JSON or comma-separated values.",
        "",
        "| Variable | Default | Description |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        env = f"{ENV_PREFIX}{name.upper()}"
        default = _md_cell(_default_text(name))
        lines.append(f"| `{env}` | `{default}` | {_md_cell(field.description or '')} |")
    return "\n".join(lines) + "\n"
