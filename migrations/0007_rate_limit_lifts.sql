-- When a person lifted a correspondent's rate-limit block (by releasing one
-- of its messages). A row with lifted_at set no longer blocks, and only
-- messages first seen since then count towards the limit again: counting
-- the flood that caused the block would put it straight back on the next
-- message. A new block clears it.
ALTER TABLE blocked_correspondents ADD COLUMN lifted_at TEXT;
