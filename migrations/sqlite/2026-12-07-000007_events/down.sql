DROP TABLE video_del_event;
