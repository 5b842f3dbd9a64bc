DROP TABLE video_del_rec;
