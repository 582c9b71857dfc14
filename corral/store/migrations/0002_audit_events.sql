-- One row per audited MCP message, in the shim's wire format (docs/shim.md, "Audit events"),
-- partitioned by UTC day so retention is a DROP of old partitions. The primary key includes the
-- partition key (time): a retried batch carries the same time and id for each event, so
-- ON CONFLICT DO NOTHING makes ingest idempotent. `allowed` copies decision.allowed for filtering.

CREATE TABLE audit_events (
    time           timestamptz      NOT NULL,
    event_id       uuid             NOT NULL,
    namespace      text             NOT NULL DEFAULT '',
    server         text             NOT NULL DEFAULT '',
    direction      text,
    method         text,
    request_id     jsonb,
    session_id     text,
    user_subject   text,
    email          text,
    groups         text[]           NOT NULL DEFAULT '{}',
    client_id      text,
    client_name    text,
    client_version text,
    target_kind    text,
    target         text,
    arguments      jsonb,
    result         jsonb,
    decision       jsonb,
    allowed        boolean,
    filters        jsonb,
    status         text             NOT NULL DEFAULT '',
    error          jsonb,
    http_status    integer,
    latency_ms     double precision,
    received_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (time, event_id)
) PARTITION BY RANGE (time);

CREATE INDEX audit_events_user_time ON audit_events (user_subject, time);
CREATE INDEX audit_events_server_time ON audit_events (namespace, server, time);
