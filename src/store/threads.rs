//! Thread and correspondent SQL: attaching a message to its conversation
//! inside the record transaction, and the queries behind `threads`,
//! `thread ID` and `correspondents`.

use rusqlite::{Connection, OptionalExtension, params};

use super::Cached;

use crate::thread::{self, ThreadKeys};

/// How a message was attached to its thread, and what a redirect adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    pub thread_id: i64,
    /// `message-id`, `references`, `ticket-token`, `relay-subject` or `new`.
    pub key: &'static str,
    /// `yes` or `no: <why>` when a repair was considered.
    pub repaired: Option<String>,
    /// The In-Reply-To/References lines to add on redirect.
    pub repair_headers: Option<String>,
}

/// What attaching needs besides the keys.
#[derive(Debug, Clone)]
pub struct AttachContext<'a> {
    /// The message's own row, already inserted.
    pub row_id: i64,
    pub mailbox: &'a str,
    pub now: &'a str,
    /// Threads active since this time can take a relay-and-subject match.
    pub relay_window_since: &'a str,
    /// The message will be forwarded (repairs only matter then).
    pub forwarding: bool,
    /// Its mailbox's helpdesk address, lowercased.
    pub forward_to: &'a str,
    pub repair_enabled: bool,
    pub held: bool,
}

/// Finds or starts the thread for a message and records its keys.
pub(super) fn attach(
    conn: &Connection,
    keys: &ThreadKeys,
    context: &AttachContext<'_>,
) -> rusqlite::Result<Attachment> {
    let correspondent = resolve_correspondent(conn, keys, context.now)?;
    let (thread_id, key) = match find_thread(conn, keys, correspondent, context)? {
        Some(found) => found,
        None => {
            conn.execute_cached(
                "INSERT INTO threads (mailbox, subject, subject_key, correspondent, relay, created_at, last_activity_at, forward_to)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
                params![
                    context.mailbox,
                    keys.subject,
                    keys.subject_key,
                    correspondent,
                    keys.relay,
                    context.now,
                    context.forward_to
                ],
            )?;
            (conn.last_insert_rowid(), "new")
        }
    };
    let mut insert_id = conn.prepare_cached(
        "INSERT OR IGNORE INTO thread_message_ids (message_id, thread) VALUES (?1, ?2)",
    )?;
    for id in keys.own_id.iter().chain(&keys.referenced_ids) {
        insert_id.execute(params![id, thread_id])?;
    }
    let mut insert_token =
        conn.prepare_cached("INSERT OR IGNORE INTO thread_tokens (token, thread) VALUES (?1, ?2)")?;
    for token in &keys.tokens {
        insert_token.execute(params![token, thread_id])?;
    }
    // NOTE: Planned before the thread takes this message's correspondent
    // as its owner (when it had none), so a token joiner is judged by the
    // owner the thread had.
    let (repaired, repair_headers) = if context.forwarding {
        plan_repair(
            conn,
            keys,
            key,
            (thread_id, correspondent),
            context.row_id,
            context.repair_enabled,
        )?
    } else {
        (None, None)
    };
    conn.execute_cached(
        "UPDATE threads SET message_count = message_count + 1, held_count = held_count + ?2,
            last_activity_at = MAX(last_activity_at, ?3),
            correspondent = COALESCE(correspondent, ?4), relay = COALESCE(relay, ?5)
         WHERE id = ?1",
        params![
            thread_id,
            i64::from(context.held),
            context.now,
            correspondent,
            keys.relay
        ],
    )?;
    Ok(Attachment {
        thread_id,
        key,
        repaired,
        repair_headers,
    })
}

/// Keys in order: the message's own Message-ID (a copy of a message
/// already logged), In-Reply-To/References, a ticket token, then the relay
/// correspondent with the normalised subject. Never the subject alone.
fn find_thread(
    conn: &Connection,
    keys: &ThreadKeys,
    correspondent: Option<i64>,
    context: &AttachContext<'_>,
) -> rusqlite::Result<Option<(i64, &'static str)>> {
    let mut by_id =
        conn.prepare_cached("SELECT MIN(thread) FROM thread_message_ids WHERE message_id = ?1")?;
    if let Some(own_id) = &keys.own_id
        && let Some(thread) = by_id.query_row([own_id], |row| row.get::<_, Option<i64>>(0))?
    {
        return Ok(Some((thread, "message-id")));
    }
    for id in &keys.referenced_ids {
        if let Some(thread) = by_id.query_row([id], |row| row.get::<_, Option<i64>>(0))? {
            return Ok(Some((thread, "references")));
        }
    }
    // NOTE: A ticket token and a relay subject only mean something within
    // one helpdesk ([#1234] at one Freshdesk account is another ticket at
    // the next); a Message-ID is the same message wherever it went.
    let mut by_token = conn.prepare_cached(
        "SELECT MIN(tokens.thread) FROM thread_tokens tokens
         JOIN threads ON threads.id = tokens.thread
         WHERE tokens.token = ?1 AND (threads.forward_to IS NULL OR threads.forward_to = ?2)",
    )?;
    for token in &keys.tokens {
        if let Some(thread) = by_token.query_row(params![token, context.forward_to], |row| {
            row.get::<_, Option<i64>>(0)
        })? {
            return Ok(Some((thread, "ticket-token")));
        }
    }
    if keys.relay.is_some()
        && let (Some(correspondent), Some(subject_key)) = (correspondent, &keys.subject_key)
        && !subject_key.is_empty()
    {
        let found = conn
            .query_row(
                "SELECT id FROM threads
                 WHERE correspondent = ?1 AND subject_key = ?2 AND last_activity_at >= ?3
                     AND (forward_to IS NULL OR forward_to = ?4)
                 ORDER BY last_activity_at DESC LIMIT 1",
                params![
                    correspondent,
                    subject_key,
                    context.relay_window_since,
                    context.forward_to
                ],
                |row| row.get::<_, i64>(0),
            )
            .optional()?;
        if let Some(thread) = found {
            return Ok(Some((thread, "relay-subject")));
        }
    }
    Ok(None)
}

/// Maps every address of the message to one correspondent, creating it on
/// first sight and adding addresses not seen before.
fn resolve_correspondent(
    conn: &Connection,
    keys: &ThreadKeys,
    now: &str,
) -> rusqlite::Result<Option<i64>> {
    if keys.addresses.is_empty() {
        return Ok(None);
    }
    let correspondent = match known_correspondent(conn, keys)? {
        Some(id) => id,
        None => {
            conn.execute_cached(
                "INSERT INTO correspondents (relay, created_at) VALUES (?1, ?2)",
                params![keys.relay, now],
            )?;
            conn.last_insert_rowid()
        }
    };
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO correspondent_addresses (address, correspondent, kind, first_seen_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (address, kind) in &keys.addresses {
        insert.execute(params![address, correspondent, kind, now])?;
    }
    Ok(Some(correspondent))
}

/// The repair verdict of another correspondent's message that only a
/// ticket token put in a thread.
const FOREIGN_TOKEN_REPAIR: &str = "no: the ticket token is in another correspondent's thread; the helpdesk matches a real token by itself";

/// The correspondent the log knows for a message's addresses, without
/// recording anything (a release plans its repair read-only).
pub(super) fn known_correspondent(
    conn: &Connection,
    keys: &ThreadKeys,
) -> rusqlite::Result<Option<i64>> {
    let mut statement = conn
        .prepare_cached("SELECT correspondent FROM correspondent_addresses WHERE address = ?1")?;
    for (address, _) in &keys.addresses {
        if let Some(found) = statement
            .query_row(params![address], |row| row.get(0))
            .optional()?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// A repair is considered when a message to be forwarded (now, or on
/// release) without In-Reply-To and References joined a thread by ticket
/// token or relay and subject.
pub(super) fn plan_repair(
    conn: &Connection,
    keys: &ThreadKeys,
    key: &str,
    (thread_id, correspondent): (i64, Option<i64>),
    row_id: i64,
    repair_enabled: bool,
) -> rusqlite::Result<(Option<String>, Option<String>)> {
    if !matches!(key, "ticket-token" | "relay-subject") {
        return Ok((None, None));
    }
    // NOTE: A token joins anyone who writes it: a newsletter's `[SPRING-2024]`
    // looks like a Zendesk ID. Repairing another person's message into the
    // thread would merge their ticket with its owner's (and show one
    // customer the other's conversation); the helpdesk matches a real
    // token in the message by itself. Decided first, whatever else holds,
    // so the verdict also keeps this message out of the thread's later
    // repairs (below). A thread with no known owner is nobody's to join.
    if key == "ticket-token" {
        let owner: Option<i64> = conn
            .query_row(
                "SELECT correspondent FROM threads WHERE id = ?1",
                params![thread_id],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        if owner.is_none() || owner != correspondent {
            return Ok((Some(FOREIGN_TOKEN_REPAIR.to_owned()), None));
        }
    }
    if keys.has_references() {
        return Ok((None, None));
    }
    if !repair_enabled {
        return Ok((
            Some("no: repair_threading is off for this mailbox".to_owned()),
            None,
        ));
    }
    if let Some(why) = &keys.repair_blocked_by {
        return Ok((Some(format!("no: {why}")), None));
    }
    // NOTE: Name the earlier messages the helpdesk has: the ones forwarded
    // (or about to be) with their original Message-IDs, newest 20. Not
    // another person's that only a token put in the thread (above): the
    // helpdesk may keep those in a ticket of their own.
    let mut statement = conn.prepare_cached(
        "SELECT message_id FROM (
             SELECT id, message_id FROM messages
             WHERE thread_id = ?1 AND id < ?2 AND message_id IS NOT NULL
                 AND state IN ('forwarded', 'pending')
                 AND (repaired IS NULL OR repaired NOT LIKE ?3 || '%')
             ORDER BY id DESC LIMIT 20)
         ORDER BY id",
    )?;
    let ids: Vec<String> = statement
        .query_map(params![thread_id, row_id, FOREIGN_TOKEN_REPAIR], |row| {
            row.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(match thread::repair_lines(&ids) {
        Some(lines) => (Some("yes".to_owned()), Some(lines)),
        None => (
            Some("no: no earlier forwarded message in the thread to refer to".to_owned()),
            None,
        ),
    })
}

/// One thread as `deskbridge threads` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThreadRow {
    pub id: i64,
    pub mailbox: String,
    pub subject: Option<String>,
    /// The correspondent's main address (relay alias first).
    pub correspondent: Option<String>,
    pub correspondent_id: Option<i64>,
    pub relay: Option<String>,
    pub messages: i64,
    pub held: i64,
    pub created_at: String,
    pub last_activity: String,
}

/// Filters for `deskbridge threads`.
#[derive(Debug, Clone, Default)]
pub struct ThreadFilter {
    pub mailbox: Option<String>,
    pub relay: Option<String>,
    /// Threads with at least one message in this state.
    pub state: Option<String>,
    /// Threads active at or after this RFC 3339 time.
    pub since: Option<String>,
    pub limit: Option<u32>,
}

const THREAD_COLUMNS: &str = "t.id, t.mailbox, t.subject,
    (SELECT address FROM correspondent_addresses a WHERE a.correspondent = t.correspondent
     ORDER BY a.kind = 'alias' DESC, a.first_seen_at LIMIT 1),
    t.correspondent, t.relay, t.message_count, t.held_count, t.created_at, t.last_activity_at";

fn read_thread(row: &rusqlite::Row<'_>) -> rusqlite::Result<ThreadRow> {
    Ok(ThreadRow {
        id: row.get(0)?,
        mailbox: row.get(1)?,
        subject: row.get(2)?,
        correspondent: row.get(3)?,
        correspondent_id: row.get(4)?,
        relay: row.get(5)?,
        messages: row.get(6)?,
        held: row.get(7)?,
        created_at: row.get(8)?,
        last_activity: row.get(9)?,
    })
}

/// Threads, most recently active first.
pub(super) fn list(conn: &Connection, filter: &ThreadFilter) -> rusqlite::Result<Vec<ThreadRow>> {
    let mut statement = conn.prepare(&format!(
        "SELECT {THREAD_COLUMNS} FROM threads t
         WHERE (?1 IS NULL OR t.mailbox = ?1) AND (?2 IS NULL OR t.relay = ?2)
           AND (?3 IS NULL OR t.last_activity_at >= ?3)
           AND (?4 IS NULL OR EXISTS (SELECT 1 FROM messages m WHERE m.thread_id = t.id AND m.state = ?4))
         ORDER BY t.last_activity_at DESC, t.id DESC LIMIT ?5"
    ))?;
    let limit = filter.limit.map_or(-1, i64::from);
    statement
        .query_map(
            params![
                filter.mailbox,
                filter.relay,
                filter.since,
                filter.state,
                limit
            ],
            read_thread,
        )?
        .collect()
}

/// One thread by id.
pub(super) fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<ThreadRow>> {
    conn.query_row_cached(
        &format!("SELECT {THREAD_COLUMNS} FROM threads t WHERE t.id = ?1"),
        [id],
        read_thread,
    )
    .optional()
}

/// A hidden customer: every address it used and every thread it has.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorrespondentRow {
    pub id: i64,
    pub relay: Option<String>,
    pub aliases: Vec<String>,
    pub tokens: Vec<String>,
    pub addresses: Vec<String>,
    pub threads: Vec<i64>,
    pub created_at: String,
}

/// Correspondents, newest first; `relay` filters by relay name.
pub(super) fn correspondents(
    conn: &Connection,
    relay: Option<&str>,
    limit: Option<u32>,
) -> rusqlite::Result<Vec<CorrespondentRow>> {
    let mut statement = conn.prepare(
        "SELECT id, relay, created_at FROM correspondents
         WHERE (?1 IS NULL OR relay = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let limit = limit.map_or(-1, i64::from);
    let heads: Vec<(i64, Option<String>, String)> = statement
        .query_map(params![relay, limit], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut addresses = conn.prepare_cached(
        "SELECT address, kind FROM correspondent_addresses WHERE correspondent = ?1 ORDER BY first_seen_at, address",
    )?;
    let mut threads =
        conn.prepare_cached("SELECT id FROM threads WHERE correspondent = ?1 ORDER BY id")?;
    let mut rows = Vec::with_capacity(heads.len());
    for (id, relay, created_at) in heads {
        let mut row = CorrespondentRow {
            id,
            relay,
            aliases: Vec::new(),
            tokens: Vec::new(),
            addresses: Vec::new(),
            threads: threads
                .query_map([id], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?,
            created_at,
        };
        let found: Vec<(String, String)> = addresses
            .query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (address, kind) in found {
            match kind.as_str() {
                "alias" => row.aliases.push(address),
                "token" => row.tokens.push(address),
                _ => row.addresses.push(address),
            }
        }
        rows.push(row);
    }
    Ok(rows)
}
