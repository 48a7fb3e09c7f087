-- When a person lifted a correspondent's rate-limit block (by releasing one
-- of its messages), and the last message in the log at that moment. A row
-- with lifted_at set no longer blocks, and only messages logged after that
-- one count towards the limit again: counting the flood that caused the
-- block would put it straight back on the next message. A new block
-- clears both.
ALTER TABLE blocked_correspondents ADD COLUMN lifted_at TEXT;
ALTER TABLE blocked_correspondents ADD COLUMN lifted_after_message INTEGER;
