"""Pure parts of the shim: the documented config format, payload modes and redaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.shim.audit import REDACTED, parse_path, payload, redact
from corral.shim.config import ConfigError, SecretSource, parse_config
from corral.shim.sessions import SessionOwners

DOCS = Path(__file__).resolve().parents[2] / "docs" / "shim.md"


def test_the_documented_example_is_a_valid_config() -> None:
    example = re.search(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert example is not None
    config = parse_config(example[1])
    assert config.audience == "corral:team-a/github"
    assert config.filters[0].failure_policy == "Fail"
    inline = SecretSource.model_validate({"value": "s3cret"})
    assert "s3cret" not in repr(inline)
    assert inline.read() == "s3cret"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("server: {namespace: a, name: b}", "upstream"),
        ("[1, 2", "not valid YAML"),
        (
            "server: {namespace: a, name: b}\nupstream: {url: x}\n"
            "identity: {issuer: i, jwks: [{}]}\nsurprise: 1",
            "surprise",
        ),
    ],
)
def test_bad_configs_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(text)


def test_redaction_by_paths_and_wildcards() -> None:
    value = {"password": "p", "items": [{"token": "a"}, {"token": "b", "keep": 1}]}
    paths = [parse_path("$.arguments.password"), parse_path("arguments.items.*.token")]
    assert redact({"arguments": value}, paths)["arguments"] == {
        "password": REDACTED,
        "items": [{"token": REDACTED}, {"token": REDACTED, "keep": 1}],
    }
    assert value["password"] == "p"


def test_payload_modes() -> None:
    arguments = {"b": 1, "a": "x"}
    assert payload("none", arguments, [], "arguments") is None
    assert payload("metadata", arguments, [], "arguments") == {"keys": ["a", "b"], "bytes": 15}
    assert payload("full", arguments, [("arguments", "a")], "arguments") == {
        "b": 1,
        "a": REDACTED,
    }


def test_session_owners_bind_and_end() -> None:
    owners = SessionOwners(max_sessions=2)
    owners.bind("s1", "alice")
    assert owners.owned_by("s1", "alice")
    assert not owners.owned_by("s1", "bob")
    owners.end("s1")
    assert not owners.owned_by("s1", "alice")
    owners.bind("s2", "a")
    owners.bind("s3", "b")
    assert len(owners) == 2
