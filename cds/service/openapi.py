"""OpenAPI descriptions of the request bodies and error responses.

The routes read their bodies themselves (bounded, see `cds.service.api.read_json`), so FastAPI cannot
infer the body schemas: they are declared here, from the CDS Hooks wire format, for the schema that
`app.openapi()` builds (the service does not publish it; tests fuzz the service against it).
"""

from __future__ import annotations

from typing import Any

from cds.service.models import FHIR_ID

OPERATION_OUTCOME: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
}

_STRING = {"type": "string"}

HOOK_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string", "enum": ["patient-view"]},
        "hookInstance": {"type": "string", "format": "uuid"},
        "fhirServer": {"type": "string", "format": "uri"},
        "fhirAuthorization": {
            "type": "object",
            "properties": {
                "access_token": _STRING,
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "scope": _STRING,
                "subject": _STRING,
                "patient": _STRING,
            },
        },
        "context": {
            "type": "object",
            "required": ["userId", "patientId"],
            "properties": {
                "userId": _STRING,
                "patientId": {"type": "string", "pattern": FHIR_ID.pattern},
                "encounterId": _STRING,
            },
        },
        "prefetch": {"type": "object", "additionalProperties": True},
        "extension": {"type": "object"},
    },
}

FEEDBACK_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["card", "outcome"],
                "properties": {
                    "card": _STRING,
                    "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
                    "acceptedSuggestions": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"id": _STRING}},
                    },
                    "overrideReason": {
                        "type": "object",
                        "properties": {
                            "reason": {
                                "type": "object",
                                "properties": {"system": _STRING, "code": _STRING, "display": _STRING},
                            },
                            "userComment": _STRING,
                        },
                    },
                    "outcomeTimestamp": {"type": "string", "format": "date-time"},
                },
            },
        }
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


HOOK_BODY = _body(HOOK_REQUEST)
FEEDBACK_BODY = _body(FEEDBACK_REQUEST)

_DESCRIPTIONS = {
    400: "Malformed or refused request (OperationOutcome)",
    401: "Missing or invalid client JWT (OperationOutcome, no detail)",
    404: "Unknown CDS service (OperationOutcome)",
    412: "Required FHIR data could not be obtained (OperationOutcome)",
    503: "Busy, past the request deadline or database unavailable: retry after Retry-After (OperationOutcome)",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for these error statuses, each an OperationOutcome."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": OPERATION_OUTCOME}},
        }
        for status in statuses
    }
