"""Every default is defined once, in the settings model: the CLI, `serve`, the gateway, the JWT
verifier and the database take theirs from it."""

from __future__ import annotations

import dataclasses
import inspect

from cds.cli import build_parser
from cds.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS, Settings, setting_default
from cds.fhir.gateway import GatewayLimits
from cds.fhir.safejson import DEFAULT_MAX_DEPTH
from cds.population.bulk import PollPolicy
from cds.service.auth import AuthConfig
from cds.service.serving import serve
from cds.store.database import Database, make_engine


def test_cli_serve_defaults_are_the_service_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.workers) == (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS)
    params = inspect.signature(serve).parameters
    assert params["host"].default == DEFAULT_HOST
    assert params["port"].default == DEFAULT_PORT
    assert params["workers"].default == DEFAULT_WORKERS


def test_gateway_limits_default_to_the_settings() -> None:
    # regression: the gateway's own default FHIR timeout was 3.0 s while the setting said 2.0 s
    assert GatewayLimits() == GatewayLimits.from_settings(Settings())
    assert GatewayLimits().timeout == Settings.model_fields["fhir_timeout"].default


def test_auth_and_database_defaults_are_the_settings() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(AuthConfig)}
    assert fields["jwks_timeout"] == setting_default("auth_jwks_timeout")
    assert fields["clock_skew"] == setting_default("auth_clock_skew")
    assert fields["max_token_lifetime"] == setting_default("auth_max_token_lifetime")
    assert fields["jwks_cache_seconds"] == setting_default("auth_jwks_cache_seconds")
    assert fields["min_refresh_seconds"] == setting_default("auth_jwks_min_refresh_seconds")
    for function in (make_engine, Database.__init__):
        params = inspect.signature(function).parameters
        assert params["connect_timeout"].default == setting_default("database_connect_timeout")
        assert params["pool_size"].default == setting_default("database_pool_size")


def test_bulk_polling_and_json_depth_defaults_are_the_settings() -> None:
    policy = PollPolicy()
    assert policy.timeout == setting_default("bulk_export_timeout")
    assert policy.max_interval == setting_default("bulk_poll_max_interval")
    assert setting_default("max_json_depth") == DEFAULT_MAX_DEPTH
