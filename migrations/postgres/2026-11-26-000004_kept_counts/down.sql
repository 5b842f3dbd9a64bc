DROP TABLE video_del_counts;
