"""A CDS Hooks sandbox-style token (ES384, ``jku`` in the header) is accepted against a JWKS served
over real HTTP from a local server - the JWKS is fetched by the service's own client, not mocked."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.security.builders import app_client, base_settings, full_prefetch, hook_request
from tests.security.fake_ehr import SERVICE_PATH, FakeEhr, bearer


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, FakeEhr, list[str]]]:
    ehr = FakeEhr()
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            body = json.dumps(ehr.jwks([ehr.es])).encode()
            self.send_response(200 if self.path == "/.well-known/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", ehr, served
    server.shutdown()
    thread.join(timeout=5)


async def test_sandbox_style_es384_token_with_jku_is_accepted(
    tmp_path: Path, jwks_server: tuple[str, FakeEhr, list[str]]
) -> None:
    jku, ehr, served = jwks_server
    settings = base_settings(
        tmp_path,
        auth_required=True,
        auth_issuers=[ehr.issuer],
        auth_jku_allowed=[jku],
        public_base_url="https://cds.test",
    )
    async with app_client(settings) as client:
        token = ehr.token(f"https://cds.test{SERVICE_PATH}", jku=jku)
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header["alg"] == "ES384"
        assert header["jku"] == jku
        response = await client.post(
            SERVICE_PATH, json=hook_request(full_prefetch()), headers={"Authorization": bearer(token)}
        )
        assert response.status_code == 200, response.text
        assert served == ["/.well-known/jwks.json"]
        replay = await client.post(
            SERVICE_PATH, json=hook_request(full_prefetch()), headers={"Authorization": bearer(token)}
        )
        assert replay.status_code == 401, "the same jti is refused"
