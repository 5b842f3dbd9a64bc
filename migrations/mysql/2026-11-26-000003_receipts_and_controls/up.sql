-- Where each request came from (`seed`, `v1`, `cli`) and the X-Request-Id
-- it came with. Rows left by the Go scheduler came through its route.
ALTER TABLE video_del_rec
    ADD COLUMN source VARCHAR(8) NOT NULL DEFAULT 'seed',
    ADD COLUMN request_id VARCHAR(64) NULL;
-- Receipts: written by the ack that removes a request's row, kept for
-- `receipts.retention_days`. One per id: a later deletion of the same id
-- replaces it.
CREATE TABLE video_del_receipt (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    requested_at BIGINT NOT NULL,
    completed_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    missing INTEGER NOT NULL,
    acked_by VARCHAR(128) NOT NULL,
    source VARCHAR(8) NOT NULL,
    request_id VARCHAR(64) NULL,
    -- How many times this id's deletion completed (a receipt replaced by a
    -- later one counts up): lets an ack tell new receipts from replaced ones.
    completions INTEGER NOT NULL DEFAULT 1,
    -- Pruning and export walk receipts by completion time.
    INDEX video_del_receipt_completed (completed_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- Switches shared by every instance: `paused` (value 1 = no claims) and
-- `pruner` (a lease: the instance pruning receipts this round).
CREATE TABLE video_del_control (
    name VARCHAR(32) NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL DEFAULT 0,
    locked_by VARCHAR(128) NULL,
    locked_until BIGINT NULL,
    updated_at BIGINT NOT NULL DEFAULT 0
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO video_del_control (name) VALUES ('paused'), ('pruner');
