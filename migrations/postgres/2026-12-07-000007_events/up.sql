-- The outbox (README, "Notifications"): one row per sink and event, written
-- in the transaction that ends a request (ack, cancel, last failed
-- attempt), delivered at least once by any instance, each row leased like
-- a request (`not_before` moves to the lease's end). An id is a webhook's
-- `webhook-id`: a sequence never gives one twice.
CREATE TABLE video_del_event (
    id BIGSERIAL PRIMARY KEY,
    sink VARCHAR(64) COLLATE "C" NOT NULL,
    kind VARCHAR(32) NOT NULL,
    subject VARCHAR(64) COLLATE "C" NOT NULL,
    occurred_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    state VARCHAR(16) COLLATE "C" NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    not_before BIGINT NOT NULL,
    locked_by VARCHAR(128),
    locked_until BIGINT,
    last_status INTEGER,
    last_error TEXT,
    delivered_at BIGINT
);
-- Claims per sink (due pending rows), the depth by sink and state, lists.
CREATE INDEX video_del_event_due ON video_del_event (sink, state, not_before);
-- Pruning walks delivered rows by delivery time; partial, so that writing
-- an event (not delivered yet) costs no entry here.
CREATE INDEX video_del_event_delivered ON video_del_event (delivered_at)
    WHERE delivered_at IS NOT NULL;
