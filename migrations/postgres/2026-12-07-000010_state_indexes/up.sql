-- The `(state, id)` index becomes two partial indexes that lead with `id`,
-- one for the failed rows and one for the running (leased) rows. Pending
-- rows, nearly all of them, are paged in id order through the primary key.
--
-- Why (BENCHMARKS.md, "the soak's PostgreSQL stall"): a queue table is
-- nearly empty whenever the drain keeps up, and autovacuum then records
-- it as empty (`reltuples` 0). Until the next ANALYZE, every estimate on
-- the table is one row, every index costs the same, and the planner may
-- look rows up by `id` through `(state, id)`: with no condition on
-- `state`, a walk of the whole index per id. The ack and the claim did
-- exactly that (27 s for one claim of 500). An index of which `id` is the
-- first column is only ever searched, never walked, for an `id`.
--
-- Building them reads the whole table once, and writes to it wait
-- meanwhile (the migrations run in a transaction: no CONCURRENTLY).
DROP INDEX video_del_rec_state;
CREATE INDEX video_del_rec_failed ON video_del_rec (id) WHERE state = 'failed';
CREATE INDEX video_del_rec_running ON video_del_rec (id) WHERE state = 'running';
