"""Typed, lenient models of CDS Hooks requests (2.0, tolerant of 1.x bodies) and discovery.

Lenient means: unknown keys are kept and ignored (Epic's ``com.epic.cdshooks.request.*`` and the
like), ``extension`` may be anything JSON, ``fhirAuthorization`` and ``prefetch`` may be missing or
``null``, prefetch values may be ``null``, OperationOutcomes or anything else (the prefetch component
decides what is usable). Strict only where the service cannot work otherwise: ``hook`` must be a
string, ``context.patientId`` must be a FHIR id (it goes into FHIR queries; ``.`` and ``..`` are
refused: they would be path segments), ``fhirServer`` must be a clean absolute http(s) URL (no
userinfo, query, fragment, dot segments; see `cds.fhir.urls.parse_url`). Wrong types anywhere in the
typed fields are a 400 naming the field, never its value.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cds.errors import InvalidRequest
from cds.fhir.urls import UrlError, parse_url

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FhirAuthorization(_Lenient):
    """`fhirAuthorization`: only `access_token` is used. Never logged."""

    access_token: str | None = None
    token_type: str | None = None
    expires_in: int | float | None = None
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None

    def __repr__(self) -> str:  # keep the token out of reprs and tracebacks
        return "FhirAuthorization(access_token=***)"

    __str__ = __repr__


class HookContext(_Lenient):
    userId: str | None = None
    patientId: str
    encounterId: str | None = None

    @field_validator("patientId", mode="before")
    @classmethod
    def _patient_id(cls, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("Patient/"):
            value = value.removeprefix("Patient/")
        if not isinstance(value, str) or not FHIR_ID.fullmatch(value) or set(value) == {"."}:
            raise ValueError("context.patientId must be a FHIR resource id")
        return value


class CdsRequest(_Lenient):
    """A CDS Hooks service request."""

    hook: str
    hookInstance: str | None = None
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: HookContext
    prefetch: dict[str, Any] | None = None
    extension: Any = None

    @model_validator(mode="before")
    @classmethod
    def _from_1x(cls, data: Any) -> Any:
        """1.0-era bodies: `user` at top level, `patient` at top level, `oauth` instead of
        `fhirAuthorization`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        context = data.get("context")
        if isinstance(context, dict):
            context = dict(context)
            if "patientId" not in context and isinstance(data.get("patient"), str):
                context["patientId"] = data["patient"]
            if "userId" not in context and isinstance(data.get("user"), str):
                context["userId"] = data["user"]
            data["context"] = context
        elif context is None and isinstance(data.get("patient"), str):
            data["context"] = {"patientId": data["patient"], "userId": data.get("user")}
        if data.get("fhirAuthorization") is None and isinstance(data.get("oauth"), dict):
            data["fhirAuthorization"] = data["oauth"]
        return data

    @field_validator("fhirServer", mode="before")
    @classmethod
    def _fhir_server(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError("fhirServer must be an absolute http(s) URL")
        try:
            parse_url(value)
        except UrlError:
            raise ValueError("fhirServer must be an absolute http(s) URL") from None
        return value.rstrip("/")

    @property
    def access_token(self) -> str | None:
        auth = self.fhirAuthorization
        return auth.access_token if auth is not None and auth.access_token else None

    def __repr__(self) -> str:
        return f"CdsRequest(hook={self.hook!r}, hookInstance={self.hookInstance!r})"

    __str__ = __repr__


def parse_request(body: Any) -> CdsRequest:
    """Validate a decoded JSON body; errors name the fields, never the values (PHI)."""
    from pydantic import ValidationError

    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return CdsRequest.model_validate(body)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(body)"
            problems.append(f"{loc}: {err['msg']}")
        raise InvalidRequest("invalid CDS Hooks request: " + "; ".join(problems[:10])) from None


class ServiceDescription(BaseModel):
    """One entry of the discovery response."""

    model_config = ConfigDict(extra="forbid")

    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str] = Field(default_factory=dict)
    usageRequirements: str | None = None
