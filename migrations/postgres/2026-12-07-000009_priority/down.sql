DROP INDEX video_del_rec_urgent;
ALTER TABLE video_del_rec DROP COLUMN priority;
