-- Where a mailbox's mail comes from, as `user@host:port/folder`, written by
-- every pass over it. A copy of a message forwarded from a mailbox that is
-- no longer in the config counts as already forwarded only when that
-- mailbox read the same account and folder: the mailbox was renamed, not
-- replaced by one for another helpdesk. NULL for mailboxes last worked on
-- before this column existed.
ALTER TABLE mailboxes ADD COLUMN account TEXT;
