-- One row per audited MCP message, partitioned by UTC day so retention is a DROP of old partitions.
-- The primary key includes the partition key (time): a retried batch carries the same time and
-- event_id for each event, so ON CONFLICT DO NOTHING makes ingest idempotent.

CREATE TABLE audit_events (
    time            timestamptz      NOT NULL,
    event_id        uuid             NOT NULL,
    request_id      text             NOT NULL DEFAULT '',
    user_subject    text             NOT NULL DEFAULT '',
    groups          text[]           NOT NULL DEFAULT '{}',
    client_name     text,
    client_version  text,
    namespace       text             NOT NULL DEFAULT '',
    server          text             NOT NULL DEFAULT '',
    method          text             NOT NULL DEFAULT '',
    target          text,
    decision        text             NOT NULL CHECK (decision IN ('allow', 'deny')),
    rule            text,
    filter_verdicts jsonb,
    outcome         text             NOT NULL DEFAULT '',
    status          integer,
    latency_ms      double precision,
    session_id      text,
    arguments       jsonb,
    result          jsonb,
    received_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (time, event_id)
) PARTITION BY RANGE (time);

CREATE INDEX audit_events_user_time ON audit_events (user_subject, time);
CREATE INDEX audit_events_server_time ON audit_events (namespace, server, time);
