-- Whether a message may have been handled before: put back for another attempt, sent
-- back by an operator, or found in the ledger by a settle. A claim looks up which plugins
-- already settled only such messages; one that arrived once (`received`) and was never
-- put back has no ledger rows. Rows enqueued before this column existed count as seen.
ALTER TABLE inbox ADD COLUMN seen boolean NOT NULL DEFAULT true;
ALTER TABLE inbox ALTER COLUMN seen SET DEFAULT false;
