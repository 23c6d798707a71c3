from __future__ import annotations

from datetime import date

import pytest

from cds.config import Settings, settings_markdown
from cds.service.settings_doc import SETTINGS_DOC


def test_settings_doc_matches_the_model() -> None:
    assert SETTINGS_DOC.read_text(encoding="utf-8") == settings_markdown(), (
        "cds/service/SETTINGS.md is stale: run python -m cds.service.settings_doc"
    )
    for name in Settings.model_fields:
        assert f"`CDS_{name.upper()}`" in settings_markdown()


def test_defaults() -> None:
    s = Settings()
    assert s.as_of is None
    assert s.database_url.startswith("sqlite:///")
    assert "https://sandbox.cds-hooks.org" in s.cors_origins
    assert s.show_excluded_card is False
    assert s.require_all_data is False
    assert s.fhir_allowed_servers == []  # no FHIR fetching until servers are configured
    assert s.auth_required is True  # client JWTs are required until explicitly turned off
    assert s.auth_issuers == []
    assert s.auth_trust_sandbox is False
    assert s.fhir_deadline <= 3.0  # well under the 5 s EHRs tolerate
    assert s.fhir_timeout <= s.fhir_deadline


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_AS_OF", "2026-11-01")
    monkeypatch.setenv("CDS_DATABASE_URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("CDS_FHIR_TIMEOUT", "1.5")
    monkeypatch.setenv("CDS_FHIR_MAX_PAGES", "4")
    monkeypatch.setenv("CDS_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("CDS_FHIR_ALLOWED_SERVERS", '["https://ehr.example/fhir"]')
    monkeypatch.setenv("CDS_SHOW_EXCLUDED_CARD", "true")
    monkeypatch.setenv("CDS_LOG_LEVEL", "debug")
    s = Settings()
    assert s.as_of == date(2026, 11, 1)
    assert s.database_url == "sqlite:////tmp/x.db"
    assert s.fhir_timeout == 1.5
    assert s.fhir_max_pages == 4
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.fhir_allowed_servers == ["https://ehr.example/fhir"]
    assert s.show_excluded_card is True
    assert s.log_level == "DEBUG"


def test_security_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_AUTH_ISSUERS", "https://ehr.example/cds, https://other.example")
    monkeypatch.setenv("CDS_AUTH_JKU_ALLOWED", '["https://ehr.example/.well-known/jwks.json"]')
    monkeypatch.setenv("CDS_AUTH_TENANTS", "t1")
    monkeypatch.setenv("CDS_PUBLIC_BASE_URL", "https://cds.example.org/")
    monkeypatch.setenv("CDS_AUTH_TRUST_SANDBOX", "true")
    s = Settings()
    assert s.auth_issuers == ["https://ehr.example/cds", "https://other.example"]
    assert s.trusted_issuers[-1] == "https://sandbox.cds-hooks.org"
    assert s.trusted_jku == [
        "https://ehr.example/.well-known/jwks.json",
        "https://sandbox.cds-hooks.org/.well-known/jwks.json",
    ]
    assert s.auth_tenants == ["t1"]
    assert s.public_base_url == "https://cds.example.org"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CDS_FHIR_ALLOWED_SERVERS", "https://user@ehr.example/fhir"),
        ("CDS_FHIR_ALLOWED_SERVERS", "ftp://ehr.example/fhir"),
        ("CDS_AUTH_JKU_ALLOWED", "https://ehr.example/../jwks"),
        ("CDS_PUBLIC_BASE_URL", "cds.example.org"),
    ],
)
def test_bad_urls_in_security_settings_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name.removeprefix("CDS_").lower()):
        Settings()


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_FHIR_TIMEOUT", "0")
    with pytest.raises(ValueError, match="fhir_timeout"):
        Settings()
