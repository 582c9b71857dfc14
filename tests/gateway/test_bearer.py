"""Bearer challenges and fixed-token directories (pure)."""

from __future__ import annotations

from corral.gateway.bearer import TokenDirectory, challenge, resource_metadata_url


def test_challenge_names_the_protected_resource_metadata_of_an_mcp_server() -> None:
    assert challenge("https://corral.example/", "/mcp/team-a/github", token_presented=False) == (
        'Bearer resource_metadata="https://corral.example/.well-known/'
        'oauth-protected-resource/mcp/team-a/github"'
    )
    assert challenge("https://c.example", "/api", token_presented=True).endswith(
        ', error="invalid_token"'
    )
    assert resource_metadata_url("https://c.example", "/api") == (
        "https://c.example/.well-known/oauth-protected-resource/api"
    )


def test_token_directory_finds_only_exact_tokens() -> None:
    directory = TokenDirectory({"shim-token-one": "a/one", "shim-token-two": "a/two"})
    assert directory.lookup("shim-token-two") == "a/two"
    assert directory.lookup("shim-token-tw") is None
    assert directory.lookup("") is None
