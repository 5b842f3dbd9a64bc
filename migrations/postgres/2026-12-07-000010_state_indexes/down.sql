DROP INDEX video_del_rec_running;
DROP INDEX video_del_rec_failed;
CREATE INDEX video_del_rec_state ON video_del_rec (state, id);
