-- `deskbridge messages --state S` and `--mailbox M` list the newest rows
-- first with a limit. Without these, SQLite sorts every matching row (a
-- million for `--state forwarded` on a big log) to return twenty.
CREATE INDEX messages_by_state_newest ON messages (state, id);
CREATE INDEX messages_by_mailbox_newest ON messages (mailbox, id);

-- The helpdesk address a thread's messages go to. Ticket tokens and a
-- relay correspondent's subject are only meaningful within one helpdesk:
-- [#1234] at one Freshdesk account is another ticket at the next. Threads
-- from before this column (NULL) match any helpdesk, as they did.
ALTER TABLE threads ADD COLUMN forward_to TEXT;
