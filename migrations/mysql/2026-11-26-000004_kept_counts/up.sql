-- Counts kept in the transactions that change them, so that `/v1/stats`,
-- `/metrics` and the dashboard read a few rows instead of counting
-- millions: `queued` (pending and running rows), `failed` (failed rows),
-- `done` (receipts kept). Each transaction adds its changes to one row
-- chosen at random among 16, so that concurrent instances rarely wait for
-- each other on it; a count is the sum over the rows. (`running` is
-- counted from the `(state, id)` index: at most the rows leased now.)
CREATE TABLE video_del_counts (
    shard INTEGER NOT NULL PRIMARY KEY,
    queued BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    done BIGINT NOT NULL DEFAULT 0
) ENGINE = InnoDB;
-- Rows already there (adopted from the Go scheduler, or recorded before
-- this migration) are counted once, in shard 0.
INSERT INTO video_del_counts (shard, queued, failed, done) VALUES
    (0, (SELECT COUNT(*) FROM video_del_rec WHERE state <> 'failed'),
        (SELECT COUNT(*) FROM video_del_rec WHERE state = 'failed'),
        (SELECT COUNT(*) FROM video_del_receipt)),
    (1, 0, 0, 0), (2, 0, 0, 0), (3, 0, 0, 0), (4, 0, 0, 0), (5, 0, 0, 0),
    (6, 0, 0, 0), (7, 0, 0, 0), (8, 0, 0, 0), (9, 0, 0, 0), (10, 0, 0, 0),
    (11, 0, 0, 0), (12, 0, 0, 0), (13, 0, 0, 0), (14, 0, 0, 0), (15, 0, 0, 0);
