-- How many times a request was claimed: every claim adds 1, giving rows
-- back (shutdown, an unusable storage) does not. Rows already there start
-- at 0 and count only the claims made from now on (no UPDATE here: adding
-- a column with a default leaves a large table's rows as they are).
ALTER TABLE video_del_rec ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
-- The row's `claims`, copied by the ack that writes the receipt (the
-- completing claim included): more than 1 means an earlier claim did not
-- complete the request, and may have deleted files this one then found
-- missing. 0 means "not counted": every receipt written before this
-- migration.
ALTER TABLE video_del_receipt ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
