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
    │   └── FhirServerError (412, processing)      the FHIR server failed, timed out or lied
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


class FhirServerError(DataUnavailable):
    pass


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
