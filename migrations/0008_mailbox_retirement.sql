-- When a pass first ran without this mailbox in its config: the mailbox was
-- removed (or renamed), so `status --check` without a config no longer
-- expects passes over it. A pass over the mailbox clears it again. Its
-- messages and threads stay in the log.
ALTER TABLE mailboxes ADD COLUMN retired_at TEXT;
