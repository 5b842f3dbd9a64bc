ALTER TABLE video_del_receipt DROP COLUMN claims;
ALTER TABLE video_del_rec DROP COLUMN claims;
