-- The JSON-RPC message id moves to its own column: `request_id` now holds the HTTP request's id
-- (the gateway's X-Request-Id), which correlates an audit event with the gateway's logs.

ALTER TABLE audit_events ADD COLUMN rpc_id jsonb;
