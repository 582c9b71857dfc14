"""Operator settings from flags and environment: parsing and clear errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from corral.common.assertion import generate_signing_key, public_jwk
from corral.operator.command import operator
from corral.operator.settings import SettingsError, load_jwks, parse_labels


def test_labels_parse_and_refuse_malformed_pairs() -> None:
    assert parse_labels("app=gw, tier=edge", setting="x") == {"app": "gw", "tier": "edge"}
    with pytest.raises(SettingsError, match="'app' is not key=value"):
        parse_labels("app", setting="x")


def test_jwks_file_accepts_public_keys_only(tmp_path: Path) -> None:
    key = generate_signing_key()
    public = tmp_path / "public.json"
    public.write_bytes(orjson.dumps({"keys": [public_jwk(key)]}))
    assert load_jwks(public)[0]["kty"] == "EC"

    private = tmp_path / "private.json"
    private.write_bytes(orjson.dumps({"keys": [{**public_jwk(key), "d": "secret"}]}))
    with pytest.raises(SettingsError, match="private key"):
        load_jwks(private)

    empty = tmp_path / "empty.json"
    empty.write_text('{"keys": []}')
    with pytest.raises(SettingsError, match="expected"):
        load_jwks(empty)


def test_command_reports_bad_settings_from_the_environment() -> None:
    result = CliRunner().invoke(
        operator, [], env={"CORRAL_OPERATOR_GATEWAY_POD_LABELS": "no-equals-sign"}
    )
    assert result.exit_code == 1
    assert "--gateway-pod-labels" in result.output
    assert "is not key=value" in result.output
