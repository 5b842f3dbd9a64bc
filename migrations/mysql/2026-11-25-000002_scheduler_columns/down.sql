DROP INDEX video_del_rec_state ON video_del_rec;
DROP INDEX video_del_rec_due ON video_del_rec;
ALTER TABLE video_del_rec
    DROP COLUMN last_error,
    DROP COLUMN locked_until,
    DROP COLUMN locked_by,
    DROP COLUMN not_before,
    DROP COLUMN created_at,
    DROP COLUMN attempts,
    DROP COLUMN state;
