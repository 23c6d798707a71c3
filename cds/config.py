"""Service settings, read from environment variables with the prefix ``CDS_``.

Every field carries a description; `settings_markdown()` renders the table that is committed as
``cds/service/SETTINGS.md`` (a test checks that the file matches, so the two cannot drift).

List settings accept either JSON (``CDS_CORS_ORIGINS='["https://a","https://b"]'``) or a
comma-separated string (``CDS_CORS_ORIGINS=https://a,https://b``).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "CDS_"

DEFAULT_CORS_ORIGINS = ("https://sandbox.cds-hooks.org",)
DEFAULT_CORS_ORIGIN_REGEX = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """Runtime settings of the CDS Hooks service."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    as_of: date | None = Field(
        default=None,
        description="Screening date (T0) used for every evaluation, ISO date. Unset: today's date at request time.",
    )
    database_url: str = Field(
        default="sqlite:///cds-feedback.sqlite3",
        description="SQLAlchemy URL of the feedback store (a SQLite file by default, relative to "
        "the working directory). Tables are created at startup.",
    )
    fhir_timeout: float = Field(
        default=3.0,
        gt=0,
        description="Seconds allowed for one FHIR HTTP request (connect, send, wait, read).",
    )
    fhir_connect_timeout: float = Field(
        default=1.0, gt=0, description="Seconds allowed to open a connection to the FHIR server."
    )
    fhir_deadline: float = Field(
        default=4.5,
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
        description="Allow-list of FHIR base URLs: a request whose fhirServer is not one of them "
        "(or under one) is refused with 400. Empty: any server (development only; the security "
        "issue hardens this).",
    )
    require_all_data: bool = Field(
        default=False,
        description="If true, any unobtainable resource type answers 412. If false, only Patient "
        "and Condition are required; others are marked incomplete on the card.",
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
        default=50_000_000, ge=1, description="Largest accepted request body (bytes); larger is 400."
    )
    log_level: LogLevel = Field(default="INFO", description="Level of the JSON logs of the service.")

    @field_validator("fhir_allowed_servers", "cors_origins", mode="before")
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

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


def _default_text(name: str) -> str:
    field = Settings.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if value else "(empty)"
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
