-- When a person lifted a correspondent's rate-limit block (by releasing one
-- of its messages), and the last message in the log at that moment. A row
-- with lifted_at set no longer blocks, and only messages logged after that
-- one count towards the limit again: counting the flood that caused the
-- block would put it straight back on the next message. A new block
-- clears both.
ALTER TABLE blocked_correspondents ADD COLUMN lifted_at TEXT;
ALTER TABLE blocked_correspondents ADD COLUMN lifted_after_message INTEGER;

-- Correspondents compare in any letter case, as auto-reply senders and
-- thread correspondents already do: Loop@Example.com and loop@example.com
-- are one correspondent to the limit. Blocks are kept in lower case (when
-- two spellings were blocked, one block stays), and the count's index is
-- on the lower-cased correspondent.
UPDATE OR IGNORE blocked_correspondents SET address = lower(address);
DELETE FROM blocked_correspondents WHERE address != lower(address);
DROP INDEX messages_by_correspondent;
CREATE INDEX messages_by_correspondent
    ON messages (mailbox, lower(COALESCE(relay_alias, from_addr)), first_seen_at);
