ALTER TABLE video_del_rec DROP INDEX video_del_rec_urgent, DROP COLUMN priority;
