DROP TABLE video_del_announce;
