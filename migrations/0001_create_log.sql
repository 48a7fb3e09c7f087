-- The thread log: one row per mailbox, one row per fetched message, and the
-- history of each message. Timestamps are RFC 3339 UTC text so that sqlite3's
-- date functions and plain string comparison both work on them.

CREATE TABLE mailboxes (
    name                 TEXT PRIMARY KEY,
    -- UIDVALIDITY of the folder when last seen; a change triggers a rescan.
    uidvalidity          INTEGER,
    -- Highest UID recorded under that UIDVALIDITY: the fetch checkpoint.
    last_uid             INTEGER NOT NULL DEFAULT 0,
    last_pass_started_at TEXT,
    last_pass_finished_at TEXT,
    -- 'ok', 'partial' (some messages failed) or 'error: ...'.
    last_pass_outcome    TEXT
);

CREATE TABLE messages (
    id                INTEGER PRIMARY KEY,
    mailbox           TEXT NOT NULL,
    uidvalidity       INTEGER NOT NULL,
    uid               INTEGER NOT NULL,
    message_id        TEXT,
    in_reply_to       TEXT,
    -- The References header as written, Message-IDs separated by spaces.
    refs              TEXT,
    from_addr         TEXT,
    reply_to          TEXT,
    subject           TEXT,
    date              TEXT,
    size              INTEGER NOT NULL,
    -- SHA-256 of the exact bytes fetched, hex; recognises a message again
    -- after UIDVALIDITY changes.
    sha256            TEXT NOT NULL,
    state             TEXT NOT NULL
        CHECK (state IN ('pending', 'forwarded', 'held', 'skipped', 'failed')),
    -- Machine reason for held, skipped and failed rows (e.g. 'pgp-encrypted').
    reason            TEXT,
    -- Human sentence explaining the reason.
    detail            TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    -- The SMTP server's final reply to the message, e.g. '250 2.0.0 Ok: queued as ...'.
    smtp_reply        TEXT,
    resent_message_id TEXT,
    first_seen_at     TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    forwarded_at      TEXT,
    -- When the IMAP side was updated (keyword set or message moved), and how.
    settled_at        TEXT,
    settled_as        TEXT,
    UNIQUE (mailbox, uidvalidity, uid)
);

CREATE INDEX messages_by_state ON messages (state, mailbox);
CREATE INDEX messages_by_content ON messages (mailbox, sha256);
CREATE INDEX messages_by_message_id ON messages (message_id);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    message INTEGER NOT NULL REFERENCES messages (id),
    at      TEXT NOT NULL,
    -- 'recorded', 'send-attempt', 'deferred', 'forwarded', 'rejected',
    -- 'held', 'skipped', 'settled', 'settle-failed', 'rescanned', ...
    kind    TEXT NOT NULL,
    detail  TEXT
);

CREATE INDEX events_by_message ON events (message, id);
