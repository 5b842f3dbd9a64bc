DROP INDEX video_del_rec_state;
DROP INDEX video_del_rec_due;
ALTER TABLE video_del_rec DROP COLUMN last_error;
ALTER TABLE video_del_rec DROP COLUMN locked_until;
ALTER TABLE video_del_rec DROP COLUMN locked_by;
ALTER TABLE video_del_rec DROP COLUMN not_before;
ALTER TABLE video_del_rec DROP COLUMN created_at;
ALTER TABLE video_del_rec DROP COLUMN attempts;
ALTER TABLE video_del_rec DROP COLUMN state;
