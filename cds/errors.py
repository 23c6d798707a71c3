"""The one exception hierarchy of the product.

Every error the product raises on purpose is a `CdsError`. Each class carries the HTTP status and
the FHIR `OperationOutcome.issue.code` it maps to; the web layer maps them in one place
(`cds.service.errors`), and the CLI prints `str(error)`. Messages never contain PHI or tokens.

    CdsError (500, exception)            a bug or an unexpected failure
    ├── InvalidRequest (400, invalid)    malformed JSON, wrong hook, wrong types, too large
    │   └── FhirServerNotAllowed (400, forbidden)  fhirServer is not on the allow-list
    ├── AuthenticationFailed (401, login)          bad or missing JWT; never carries detail out
    ├── NotFound (404, not-found)        unknown CDS service id
    ├── DataUnavailable (412, processing)          required FHIR data could not be obtained
    │   ├── FhirError                      the FHIR server could not give the data (outcomes:
    │   │   │                              `cds.service.errors.FHIR_OUTCOMES`, one table)
    │   │   ├── FhirUnreachable            connection refused or reset, DNS, TLS
    │   │   │   └── FhirTimeout            no (whole) answer within the timeout
    │   │   ├── FhirStatusError            a non-2xx status (`.status`)
    │   │   │   ├── FhirRedirect           3xx (never followed)
    │   │   │   ├── FhirClientError        4xx
    │   │   │   │   ├── FhirAccessDenied   401, 403 (the EHR's token was refused)
    │   │   │   │   └── FhirNotFound       404, 410
    │   │   │   └── FhirServerFault        5xx
    │   │   ├── FhirInvalidBody            not JSON, too large, too deep, not the resource asked for
    │   │   └── FhirOutsideBase            a URL (a next link, an id) outside the FHIR server base
    │   └── SmartAuthorizationFailed (412, security)  SMART Backend Services authorization failed
    │                                  (discovery, key, token endpoint); names the step, no secret
    ├── ServiceUnavailable (503, transient, Retry-After)  try again later
    │   ├── Overloaded (503, throttled)    the queue for a body or an engine slot is full or too slow
    │   ├── DeadlineExceeded (503, timeout)  the request's deadline passed (the engine included)
    │   └── DatabaseUnavailable (cds.store)  the database cannot be reached
    └── InputFileError (exit code 2)     a CLI input file is unreadable or not a FHIR Bundle
"""

from __future__ import annotations


class CdsError(Exception):
    http_status: int = 500
    issue_code: str = "exception"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(CdsError):
    http_status = 400
    issue_code = "invalid"


class FhirServerNotAllowed(InvalidRequest):
    issue_code = "forbidden"


class AuthenticationFailed(CdsError):
    http_status = 401
    issue_code = "login"


class NotFound(CdsError):
    http_status = 404
    issue_code = "not-found"


class DataUnavailable(CdsError):
    http_status = 412
    issue_code = "processing"


class FhirError(DataUnavailable):
    """The FHIR server could not give the data. Messages name no URL, id, token or server text."""


class FhirUnreachable(FhirError):
    pass


class FhirTimeout(FhirUnreachable):
    pass


class FhirStatusError(FhirError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class FhirRedirect(FhirStatusError):
    pass


class FhirClientError(FhirStatusError):
    pass


class FhirAccessDenied(FhirClientError):
    pass


class FhirNotFound(FhirClientError):
    pass


class FhirServerFault(FhirStatusError):
    pass


class FhirInvalidBody(FhirError):
    pass


class FhirOutsideBase(FhirError):
    pass


class SmartAuthorizationFailed(DataUnavailable):
    """SMART Backend Services authorization (`cds.fhir.smart_backend`) failed: the message names the
    step (discovery, the key file, the token endpoint) and never a key, an assertion or a token."""

    issue_code = "security"


def fhir_status_error(status: int, message: str | None = None) -> FhirStatusError:
    """The error of its class for an unexpected HTTP status of a FHIR server; the default message
    names the status only."""
    if 300 <= status < 400:
        return FhirRedirect(message or f"the FHIR server answered a redirect (HTTP {status}), not followed", status)
    if status in (401, 403):
        return FhirAccessDenied(message or f"the FHIR server refused access (HTTP {status})", status)
    if status in (404, 410):
        return FhirNotFound(message or f"the FHIR server answered HTTP {status} (not found)", status)
    if 400 <= status < 500:
        return FhirClientError(message or f"the FHIR server answered HTTP {status}", status)
    if status >= 500:
        return FhirServerFault(message or f"the FHIR server answered HTTP {status}", status)
    return FhirStatusError(message or f"the FHIR server answered HTTP {status}", status)


def combined_fhir_error(errors: list[FhirError], message: str) -> FhirError:
    """One error for several FHIR failures (one per data domain): their common class if they all
    have the same one (and status), else `FhirError`; with `message`."""
    kinds = {(type(e), e.status if isinstance(e, FhirStatusError) else None) for e in errors}
    if len(kinds) != 1:
        return FhirError(message)
    kind, status = kinds.pop()
    if status is not None:
        return fhir_status_error(status, message)
    return kind(message)


class ServiceUnavailable(CdsError):
    """Temporary: the client should try again after `retry_after` seconds (``Retry-After``)."""

    http_status = 503
    issue_code = "transient"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(ServiceUnavailable):
    issue_code = "throttled"


class DeadlineExceeded(ServiceUnavailable):
    issue_code = "timeout"


class InputFileError(CdsError):
    http_status = 400
    issue_code = "invalid"
