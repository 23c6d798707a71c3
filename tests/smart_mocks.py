"""respx routes of a SMART Backend Services authorization server, shared by the client's unit
tests (tests/fhir/test_smart_backend.py) and `cds population`'s (tests/population/test_auth.py)."""

from __future__ import annotations

import httpx
import respx

#: What a server that supports private_key_jwt (SMART v2) advertises.
PRIVATE_KEY_JWT_V2 = {
    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    "capabilities": ["client-confidential-asymmetric", "permission-v2"],
}


def smart_configuration(router: respx.MockRouter, base: str, token_url: str, **extra: object) -> respx.Route:
    """``GET <base>/.well-known/smart-configuration``: the token endpoint, private_key_jwt, SMART v2;
    `extra` adds or replaces fields."""
    return router.get(f"{base}/.well-known/smart-configuration").mock(
        return_value=httpx.Response(200, json={"token_endpoint": token_url, **PRIVATE_KEY_JWT_V2, **extra})
    )
