-- The outbox (README, "Notifications"): one row per sink and event, written
-- in the transaction that ends a request (ack, cancel, last failed
-- attempt), delivered at least once by any instance, each row leased like
-- a request (`not_before` moves to the lease's end). An id is a webhook's
-- `webhook-id`; InnoDB keeps its AUTO_INCREMENT across restarts (MariaDB
-- 10.2.4+, MySQL 8), so none is given twice.
CREATE TABLE video_del_event (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sink VARCHAR(64) NOT NULL,
    kind VARCHAR(32) NOT NULL,
    subject VARCHAR(64) NOT NULL,
    occurred_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    state VARCHAR(16) NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    not_before BIGINT NOT NULL,
    locked_by VARCHAR(128) NULL,
    locked_until BIGINT NULL,
    last_status INTEGER NULL,
    last_error TEXT NULL,
    delivered_at BIGINT NULL,
    -- Claims per sink (due pending rows), the depth by sink and state, lists.
    INDEX video_del_event_due (sink, state, not_before),
    -- Pruning walks delivered rows by delivery time.
    INDEX video_del_event_delivered (delivered_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
