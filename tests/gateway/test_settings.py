"""Settings that carry secrets keep them out of their reprs."""

from __future__ import annotations

from corral.gateway.settings import GatewaySettings
from corral.store.pools import PoolSettings, server_settings


def test_secrets_stay_out_of_reprs() -> None:
    database = PoolSettings("postgresql://corral:hunter2-password@db/corral")
    settings = GatewaySettings(
        database=database, public_base_url="https://x", shim_tokens={"shim-secret-token": "a/b"}
    )
    assert "hunter2" not in repr(database)
    assert "hunter2" not in repr(settings)
    assert "shim-secret-token" not in repr(settings)


def test_every_connection_runs_in_utc_with_timeouts() -> None:
    session = server_settings(PoolSettings("postgresql://db", statement_timeout_ms=1234))
    assert session["TimeZone"] == "UTC"
    assert session["statement_timeout"] == "1234"
    assert int(session["idle_in_transaction_session_timeout"]) > 0
