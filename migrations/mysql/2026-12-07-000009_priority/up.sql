-- A request's priority (README, "Priority"): 0 normal (every row already
-- there, and the default), 1 urgent. Claims take urgent due rows first,
-- through `(priority, not_before)`: MySQL and MariaDB have no partial
-- index, so every row has an entry (SQLite and PostgreSQL index only the
-- urgent rows).
ALTER TABLE video_del_rec
    ADD COLUMN priority SMALLINT NOT NULL DEFAULT 0,
    ADD INDEX video_del_rec_urgent (priority, not_before);
