-- Every pass asks for the rows of a mailbox that still need work (pending,
-- or not yet settled on the IMAP server). Without this partial index that
-- query reads every row of the mailbox; with it, only the few unfinished.
CREATE INDEX messages_unfinished ON messages (mailbox, uidvalidity, uid)
    WHERE state = 'pending' OR settled_at IS NULL;
