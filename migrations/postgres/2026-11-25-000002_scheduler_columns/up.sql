-- Columns for the scheduler's semantics. Defaults make rows left by the seed
-- (only `id`) pending and due now, so nothing queued before the switch is lost.
-- Times are integer milliseconds since the Unix epoch on every backend.
ALTER TABLE video_del_rec
    ADD COLUMN state VARCHAR(16) NOT NULL DEFAULT 'pending',
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0,
    -- When the row may be claimed next: the schedule while pending, the lease
    -- expiry while running, NULL once failed.
    ADD COLUMN not_before BIGINT DEFAULT 0,
    ADD COLUMN locked_by VARCHAR(128),
    ADD COLUMN locked_until BIGINT,
    ADD COLUMN last_error TEXT;
UPDATE video_del_rec SET created_at = (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT;
-- The claim query: `not_before <= now ORDER BY not_before LIMIT n`.
CREATE INDEX video_del_rec_due ON video_del_rec (not_before);
-- Listing and counting by state, keyset-paginated by id.
CREATE INDEX video_del_rec_state ON video_del_rec (state, id);
