-- What happened around held mail: the notice to the helpdesk, the
-- auto-reply to the sender, and correspondents the rate limit has blocked
-- until a person releases one of their messages.
ALTER TABLE messages ADD COLUMN notice_sent_at TEXT;
ALTER TABLE messages ADD COLUMN auto_replied_at TEXT;

-- Serves the rate limit's "messages from this correspondent since T".
CREATE INDEX messages_by_correspondent
    ON messages (mailbox, COALESCE(relay_alias, from_addr), first_seen_at);

CREATE TABLE blocked_correspondents (
    address    TEXT PRIMARY KEY,
    blocked_at TEXT NOT NULL,
    reason     TEXT NOT NULL
);

-- One row per sender deskbridge auto-replied to, for the once-per-period rule.
CREATE TABLE auto_replies (
    address      TEXT PRIMARY KEY,
    last_sent_at TEXT NOT NULL
);
