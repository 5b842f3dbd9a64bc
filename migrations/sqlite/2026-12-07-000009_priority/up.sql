-- A request's priority (README, "Priority"): 0 normal (every row already
-- there, and the default), 1 urgent. Claims take urgent due rows first,
-- through an index holding only the urgent rows: a normal row, the bulk,
-- costs no index entry more on any insert or claim.
ALTER TABLE video_del_rec ADD COLUMN priority SMALLINT NOT NULL DEFAULT 0;
CREATE INDEX video_del_rec_urgent ON video_del_rec (not_before) WHERE priority = 1;
