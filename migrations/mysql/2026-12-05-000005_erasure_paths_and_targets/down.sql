ALTER TABLE video_del_receipt DROP COLUMN targets;
ALTER TABLE video_del_rec DROP COLUMN paths;
