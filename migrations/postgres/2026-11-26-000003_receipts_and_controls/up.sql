-- Ids compare byte by byte ("C"), as on MariaDB (utf8mb4_bin) and SQLite:
-- the same keyset order on every backend, and B-tree comparisons without
-- the locale's rules (a large part of the drain's cost otherwise).
ALTER TABLE video_del_rec ALTER COLUMN id TYPE VARCHAR(64) COLLATE "C";
-- Where each request came from (`seed`, `v1`, `cli`) and the X-Request-Id
-- it came with. Rows left by the Go scheduler came through its route.
ALTER TABLE video_del_rec
    ADD COLUMN source VARCHAR(8) NOT NULL DEFAULT 'seed',
    ADD COLUMN request_id VARCHAR(64);
-- Receipts: written by the ack that removes a request's row, kept for
-- `receipts.retention_days`. One per id: a later deletion of the same id
-- replaces it.
CREATE TABLE video_del_receipt (
    id VARCHAR(64) COLLATE "C" NOT NULL PRIMARY KEY,
    requested_at BIGINT NOT NULL,
    completed_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    missing INTEGER NOT NULL,
    acked_by VARCHAR(128) NOT NULL,
    source VARCHAR(8) NOT NULL,
    request_id VARCHAR(64),
    -- How many times this id's deletion completed (a receipt replaced by a
    -- later one counts up): lets an ack tell new receipts from replaced ones.
    completions INTEGER NOT NULL DEFAULT 1
);
-- Pruning and export walk receipts by completion time.
CREATE INDEX video_del_receipt_completed ON video_del_receipt (completed_at, id);
-- Switches shared by every instance: `paused` (value 1 = no claims) and
-- `pruner` (a lease: the instance pruning receipts this round).
CREATE TABLE video_del_control (
    name VARCHAR(32) NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL DEFAULT 0,
    locked_by VARCHAR(128),
    locked_until BIGINT,
    updated_at BIGINT NOT NULL DEFAULT 0
);
INSERT INTO video_del_control (name) VALUES ('paused'), ('pruner');
