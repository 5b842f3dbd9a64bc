-- The ack's side of the outbox (README, "Notifications"): one row per
-- group of an ack's removed rows, written in the ack's statement, holding
-- what each `deletion.completed` event needs ([id, requested_at, attempts,
-- source, request_id] per removed row, the rest once). The notifier turns
-- a row into one `video_del_event` row per event and sink in a transaction
-- that deletes it: an ack writes one row, not one per id and sink.
CREATE TABLE video_del_announce (
    id BIGSERIAL PRIMARY KEY,
    occurred_at BIGINT NOT NULL,
    acked_by VARCHAR(128) NOT NULL,
    deleted INTEGER NOT NULL,
    missing INTEGER NOT NULL,
    targets TEXT NOT NULL,
    size INTEGER NOT NULL,
    items TEXT NOT NULL
);
