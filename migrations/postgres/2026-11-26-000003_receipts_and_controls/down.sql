DROP TABLE video_del_control;
DROP TABLE video_del_receipt;
ALTER TABLE video_del_rec DROP COLUMN request_id, DROP COLUMN source;
ALTER TABLE video_del_rec ALTER COLUMN id TYPE VARCHAR(64) COLLATE "default";
