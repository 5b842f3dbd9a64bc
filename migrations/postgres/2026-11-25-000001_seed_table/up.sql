-- The seed's table. A database that already has it (rows pending from the Go
-- scheduler) keeps it as it is; the next migration adds our columns.
CREATE TABLE IF NOT EXISTS video_del_rec (
    id VARCHAR(64) NOT NULL PRIMARY KEY
);
