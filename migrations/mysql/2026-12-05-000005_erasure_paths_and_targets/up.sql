-- Paths a request named itself (`items[].paths`: renditions the templates
-- cannot name), as a JSON list of strings; NULL when it named none, which
-- is every row recorded before this migration (they keep their meaning).
-- MEDIUMTEXT: 256 paths of 1 KiB each, merged over several requests, pass
-- TEXT's 64 KiB.
ALTER TABLE video_del_rec ADD COLUMN paths MEDIUMTEXT NULL;
-- What the receipt's erasure found on each storage target, as a JSON list
-- of {name, objects, versions, missing, versions_kept}; NULL for receipts
-- written before this migration.
ALTER TABLE video_del_receipt ADD COLUMN targets TEXT NULL;
