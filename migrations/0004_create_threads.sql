-- The thread identity log: every message belongs to one thread, every
-- thread to one correspondent, and a correspondent gathers every address
-- a hidden customer has used (relay alias and reply tokens).

CREATE TABLE correspondents (
    id         INTEGER PRIMARY KEY,
    -- The relay that hides this customer, or NULL for a plain address.
    relay      TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE correspondent_addresses (
    address       TEXT PRIMARY KEY COLLATE NOCASE,
    correspondent INTEGER NOT NULL REFERENCES correspondents (id),
    -- 'alias' (the relay address), 'token' (a reply token), or 'address'.
    kind          TEXT NOT NULL,
    first_seen_at TEXT NOT NULL
);
CREATE INDEX correspondent_addresses_by_correspondent ON correspondent_addresses (correspondent);

CREATE TABLE threads (
    id               INTEGER PRIMARY KEY,
    mailbox          TEXT NOT NULL,
    -- The subject of the first message, and its normalised form (Re:/Fwd:/AW:/SV:... removed,
    -- lowercased) that the relay-and-subject key compares.
    subject          TEXT,
    subject_key      TEXT,
    correspondent    INTEGER REFERENCES correspondents (id),
    relay            TEXT,
    created_at       TEXT NOT NULL,
    last_activity_at TEXT NOT NULL,
    message_count    INTEGER NOT NULL DEFAULT 0,
    held_count       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX threads_by_activity ON threads (last_activity_at);
CREATE INDEX threads_by_correspondent_subject ON threads (correspondent, subject_key, last_activity_at);

-- Every Message-ID known to belong to a thread: its messages' own IDs and
-- every ID they referenced (the customer's, ours, the helpdesk's).
CREATE TABLE thread_message_ids (
    message_id TEXT NOT NULL,
    thread     INTEGER NOT NULL REFERENCES threads (id),
    PRIMARY KEY (message_id, thread)
) WITHOUT ROWID;

-- Helpdesk ticket tokens seen in a thread ('zendesk:1G7EOR0Q2J', 'freshdesk:1234', ...).
CREATE TABLE thread_tokens (
    token  TEXT NOT NULL,
    thread INTEGER NOT NULL REFERENCES threads (id),
    PRIMARY KEY (token, thread)
) WITHOUT ROWID;

ALTER TABLE messages ADD COLUMN thread_id INTEGER REFERENCES threads (id);
-- Which key attached the message: 'references', 'ticket-token', 'relay-subject', 'new'.
ALTER TABLE messages ADD COLUMN thread_key TEXT;
-- 'yes', or 'no: <why>' when a repair was considered; NULL when none was needed.
ALTER TABLE messages ADD COLUMN repaired TEXT;
-- The In-Reply-To/References lines added on redirect, kept so a retry sends the same bytes.
ALTER TABLE messages ADD COLUMN repair_headers TEXT;

-- SHA-256 of the body (after the header block): tells a copy of the same
-- message (a relay reusing one Message-ID for two recipients) from a
-- different message that reuses a Message-ID.
ALTER TABLE messages ADD COLUMN body_sha256 TEXT;

CREATE INDEX messages_by_thread ON messages (thread_id, id);
