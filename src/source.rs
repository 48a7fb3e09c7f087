//! The IMAP side: the only module that talks IMAP.
//!
//! Owns connecting over TLS (implicit or required STARTTLS), login, folder
//! selection, finding new UIDs, fetching bodies with `BODY.PEEK[]` (which
//! never sets `\Seen`), and [`ImapSource::settle`], the one function that
//! changes anything on the server. Every network step runs under the
//! mailbox's timeout.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_imap::Session;
use async_imap::imap_proto::{AttributeValue, MailboxDatum, NameAttribute, Response, Status};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{AuthMethod, MailboxSettings, TlsMode};
use crate::net;
use crate::tls::{self, TlsSetupError};

/// Errors talking to the IMAP server. Every variant names the server.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot set up TLS for IMAP server {addr}: {source}")]
    TlsSetup {
        addr: String,
        #[source]
        source: TlsSetupError,
    },
    #[error("cannot connect to IMAP server {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("IMAP server {addr} did not answer within {secs} s during {operation}")]
    TimedOut {
        addr: String,
        operation: &'static str,
        secs: u64,
    },
    #[error("TLS handshake with IMAP server {addr} failed: {source} ({hint})")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("IMAP server {addr} refused STARTTLS, which tls = \"starttls\" requires: {message}")]
    Starttls { addr: String, message: String },
    #[error("IMAP server {addr} rejected the login of user {user}: {message}; {hint}")]
    Login {
        addr: String,
        user: String,
        message: String,
        hint: &'static str,
    },
    #[error("IMAP server {addr}: cannot {operation}: {source}")]
    Command {
        addr: String,
        operation: String,
        #[source]
        source: async_imap::error::Error,
    },
    #[error(
        "IMAP server {addr}: folder {folder} reports no UIDVALIDITY, so UIDs cannot be tracked"
    )]
    NoUidValidity { addr: String, folder: String },
}

impl SourceError {
    /// The server answered the command with NO or BAD: it is up, and the
    /// session can go on, but it would not do this.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            SourceError::Command {
                source: async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_),
                ..
            }
        )
    }

    /// The session is gone or out of step (the connection dropped, or no
    /// answer came in time): only a new session can go on, and may work.
    pub fn needs_new_session(&self) -> bool {
        self.is_connection_lost() || matches!(self, SourceError::TimedOut { .. })
    }

    /// The connection itself is gone (the server closed it, or it broke):
    /// a new session may still work, a timeout is not this.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            SourceError::Command {
                source: async_imap::error::Error::ConnectionLost | async_imap::error::Error::Io(_),
                ..
            }
        )
    }
}

/// Result alias for IMAP operations.
pub type Result<T> = std::result::Result<T, SourceError>;

/// The selected folder's identity and size.
#[derive(Debug, Clone, Copy)]
pub struct FolderState {
    pub uidvalidity: u32,
    /// The UID the next new message will get, when the server says.
    pub uid_next: Option<u32>,
    pub exists: u32,
    /// Whether the folder keeps keywords deskbridge sets, such as
    /// `$Forwarded`: PERMANENTFLAGS lists `\*`, or says nothing.
    pub keeps_keywords: bool,
}

/// One fetched message.
#[derive(Debug)]
pub struct RawMail {
    pub uid: u32,
    /// The whole message, or only its header block when fetched with
    /// [`ImapSource::fetch_headers`].
    pub bytes: Vec<u8>,
    /// RFC822.SIZE: the size of the whole message on the server.
    pub size: u64,
}

/// What [`ImapSource::settle`] does to a set of messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settlement {
    /// Flags to add, e.g. `$Forwarded \Seen`.
    pub flags: String,
    /// Folder path (`/`-separated) to move the messages to.
    pub move_to: Option<String>,
}

impl Settlement {
    /// How the log describes this settlement.
    pub fn describe(&self) -> String {
        match &self.move_to {
            Some(folder) => format!("flags {} and moved to {folder}", self.flags),
            None => format!("flags {}", self.flags),
        }
    }
}

/// A logged-in IMAP session on one mailbox.
pub struct ImapSource {
    session: Session<TlsStream<TcpStream>>,
    addr: String,
    timeout: Duration,
    folder: String,
    /// The server's hierarchy delimiter, from `LIST "" ""`.
    delimiter: Option<String>,
    can_move: bool,
    /// UIDPLUS: `UID EXPUNGE` removes only the messages named.
    can_uid_expunge: bool,
    known_folders: HashSet<String>,
}

impl std::fmt::Debug for ImapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSource")
            .field("addr", &self.addr)
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

/// Connects, secures and logs in.
///
/// # Errors
/// Connection, TLS, STARTTLS or login failures, each naming the server.
pub async fn connect(settings: &MailboxSettings) -> Result<ImapSource> {
    let addr = format!("{}:{}", settings.host, settings.port);
    let timeout = settings.timeout;
    let tls_config = tls::client_config(settings.ca_file.as_deref()).map_err(|source| {
        SourceError::TlsSetup {
            addr: addr.clone(),
            source,
        }
    })?;
    let tcp = limit(
        &addr,
        timeout,
        "connect",
        net::connect(&settings.host, settings.port, timeout),
    )
    .await?
    .map_err(|source| SourceError::Connect {
        addr: addr.clone(),
        source,
    })?;
    // NOTE: Without TCP_NODELAY small commands wait for the peer's delayed
    // ACK (tens of milliseconds each).
    let _ = tcp.set_nodelay(true);

    let tcp = match settings.tls {
        TlsMode::Implicit => tcp,
        TlsMode::Starttls => starttls(tcp, &addr, timeout).await?,
    };
    let tls_stream = handshake(tcp, &settings.host, tls_config, &addr, timeout).await?;
    let mut client = async_imap::Client::new(tls_stream);
    if settings.tls == TlsMode::Implicit {
        read_greeting(&mut client, &addr, timeout).await?;
    }
    let username = &settings.credentials.username;
    let refusal = std::sync::Mutex::new(None);
    let login = match settings.credentials.method {
        AuthMethod::Password => {
            limit(
                &addr,
                timeout,
                "login",
                client.login_with_capabilities(username, settings.credentials.password.expose()),
            )
            .await?
        }
        AuthMethod::Xoauth2 => {
            let authenticator = Xoauth2 {
                response: settings.credentials.xoauth2_response(),
                refusal: &refusal,
                sent: false,
            };
            limit(
                &addr,
                timeout,
                "AUTHENTICATE XOAUTH2",
                client.authenticate("XOAUTH2", authenticator),
            )
            .await?
            .map(|session| (session, None))
        }
    };
    let (mut session, capabilities) = match login {
        Ok(logged_in) => logged_in,
        // NOTE: Only NO or BAD is the server's verdict on the login; a drop
        // or an I/O error is the connection's, and must not send anyone to
        // check a password that may be right.
        Err((err, _client))
            if !matches!(
                err,
                async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)
            ) =>
        {
            return Err(SourceError::Command {
                addr,
                operation: format!("log in as {username}"),
                source: err,
            });
        }
        Err((err, _client)) => {
            let unavailable = matches!(&err, async_imap::error::Error::No(text)
                if text.to_ascii_uppercase().contains("[UNAVAILABLE]"));
            let mut message = err.to_string();
            if let Some(said) = refusal.lock().ok().and_then(|mut said| said.take()) {
                message.push_str(&format!(" (the server said {said})"));
            }
            return Err(SourceError::Login {
                addr,
                user: username.clone(),
                message,
                hint: match settings.credentials.method {
                    // RFC 5530: the login could not be checked just now.
                    _ if unavailable => {
                        "the server says it cannot check logins just now (UNAVAILABLE): the next pass tries again"
                    }
                    AuthMethod::Password => "check username and password",
                    AuthMethod::Xoauth2 => {
                        "check that the server offers AUTHENTICATE XOAUTH2, and that the access token is current, was issued for this user, and allows IMAP"
                    }
                },
            });
        }
    };
    // NOTE: Most servers list their capabilities in the login reply; ask
    // only when this one did not.
    let capabilities = match capabilities {
        Some(capabilities) => capabilities,
        None => limit(&addr, timeout, "CAPABILITY", session.capabilities())
            .await?
            .map_err(|source| SourceError::Command {
                addr: addr.clone(),
                operation: "list capabilities".to_owned(),
                source,
            })?,
    };
    let can_move = capabilities.has_str("MOVE");
    let can_uid_expunge = capabilities.has_str("UIDPLUS");
    let mut source = ImapSource {
        session,
        addr,
        timeout,
        folder: settings.folder.clone(),
        delimiter: None,
        can_move,
        can_uid_expunge,
        known_folders: HashSet::new(),
    };
    source.delimiter = source.read_delimiter().await?;
    Ok(source)
}

/// Reads the server's greeting within the timeout; [`check_greeting`]
/// judges it.
async fn read_greeting<T>(
    client: &mut async_imap::Client<T>,
    addr: &str,
    timeout: Duration,
) -> Result<()>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let greeting = limit(addr, timeout, "the greeting", client.read_response()).await?;
    check_greeting(
        greeting.map(|seen| seen.map(|data| bye_text(data.parsed()))),
        addr,
    )
}

/// The text of a BYE response, `None` for any other.
fn bye_text(response: &Response<'_>) -> Option<String> {
    match response {
        Response::Data {
            status: Status::Bye,
            information,
            ..
        } => Some(information.as_deref().unwrap_or_default().to_owned()),
        _ => None,
    }
}

/// Accepts a greeting (read as its BYE text, if it was one) unless the
/// connection ended or failed first, or the server greeted with BYE (too
/// many connections, shutting down), each told as what it is rather than
/// as a refused login later.
fn check_greeting(greeting: std::io::Result<Option<Option<String>>>, addr: &str) -> Result<()> {
    let refused = |text: String| SourceError::Connect {
        addr: addr.to_owned(),
        source: std::io::Error::other(text),
    };
    match greeting {
        Ok(Some(None)) => Ok(()),
        Ok(Some(Some(bye))) => Err(refused(format!(
            "the server refused the session in its greeting: BYE {bye}"
        ))),
        Ok(None) => Err(refused(
            "the server closed the connection before its greeting".to_owned(),
        )),
        // NOTE: With TLS 1.3 the server's verdict on the handshake (an
        // alert) arrives at this first read, not in the handshake itself.
        Err(err) => Err(refused(format!(
            "reading the server's greeting failed: {err} ({})",
            tls::explain(&err)
        ))),
    }
}

/// SASL XOAUTH2 (as Google and Microsoft define it): one answer with the
/// user and the bearer token. A second challenge is the server's refusal, a
/// JSON object, which asks for an empty answer before the final NO; it is
/// kept for the error.
struct Xoauth2<'a> {
    response: String,
    refusal: &'a std::sync::Mutex<Option<String>>,
    sent: bool,
}

impl async_imap::Authenticator for Xoauth2<'_> {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        if self.sent {
            if let Ok(mut refusal) = self.refusal.lock() {
                *refusal = Some(String::from_utf8_lossy(challenge).into_owned());
            }
            return Vec::new();
        }
        self.sent = true;
        std::mem::take(&mut self.response).into_bytes()
    }
}

async fn starttls(tcp: TcpStream, addr: &str, timeout: Duration) -> Result<TcpStream> {
    let mut client = async_imap::Client::new(tcp);
    read_greeting(&mut client, addr, timeout).await?;
    limit(
        addr,
        timeout,
        "STARTTLS",
        client.run_command_and_check_ok("STARTTLS", None),
    )
    .await?
    .map_err(|err| SourceError::Starttls {
        addr: addr.to_owned(),
        message: err.to_string(),
    })?;
    Ok(client.into_inner())
}

async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    addr: &str,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>> {
    let server_name = ServerName::try_from(host.to_owned()).map_err(|err| SourceError::Tls {
        addr: addr.to_owned(),
        source: std::io::Error::other(err.to_string()),
        hint: "the host is not a valid DNS name or IP address",
    })?;
    let connector = TlsConnector::from(config);
    limit(
        addr,
        timeout,
        "the TLS handshake",
        connector.connect(server_name, tcp),
    )
    .await?
    .map_err(|source| {
        let hint = tls::explain(&source);
        SourceError::Tls {
            addr: addr.to_owned(),
            source,
            hint,
        }
    })
}

impl ImapSource {
    /// `host:port` of the server, for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn command_error(
        &self,
        operation: String,
    ) -> impl FnOnce(async_imap::error::Error) -> SourceError + use<> {
        let addr = self.addr.clone();
        move |source| SourceError::Command {
            addr,
            operation,
            source,
        }
    }

    async fn read_delimiter(&mut self) -> Result<Option<String>> {
        let mut delimiter = None;
        let timeout = self.timeout;
        self.run_checked(
            "LIST \"\" \"\"",
            ("LIST", timeout),
            "list the hierarchy delimiter".to_owned(),
            |response| {
                if let Response::MailboxData(MailboxDatum::List {
                    delimiter: Some(found),
                    ..
                }) = response
                {
                    delimiter.get_or_insert_with(|| found.to_string());
                }
            },
        )
        .await?;
        Ok(delimiter)
    }

    /// Maps a `/`-separated folder path onto the server's delimiter.
    pub fn server_folder(&self, path: &str) -> String {
        match self.delimiter.as_deref() {
            Some(delimiter) if delimiter != "/" => path.replace('/', delimiter),
            _ => path.to_owned(),
        }
    }

    /// Selects the configured folder.
    ///
    /// # Errors
    /// A missing folder, or one without UIDVALIDITY.
    pub async fn select(&mut self) -> Result<FolderState> {
        let folder = self.folder.clone();
        self.select_path(&folder).await
    }

    /// Selects any folder, given as a `/`-separated path.
    ///
    /// # Errors
    /// A missing folder, or one without UIDVALIDITY.
    pub async fn select_path(&mut self, path: &str) -> Result<FolderState> {
        let folder = self.server_folder(path);
        let fail = self.command_error(format!("select folder {folder}"));
        let mailbox = limit(
            &self.addr,
            self.timeout,
            "SELECT",
            self.session.select(&folder),
        )
        .await?
        .map_err(fail)?;
        self.folder_state(folder, &mailbox)
    }

    /// Opens a folder read-only (EXAMINE), so that nothing in it changes,
    /// not even `\Recent`: for `check-config --connect`.
    ///
    /// # Errors
    /// A missing folder, or one without UIDVALIDITY.
    pub async fn examine_path(&mut self, path: &str) -> Result<FolderState> {
        let folder = self.server_folder(path);
        let fail = self.command_error(format!("examine folder {folder}"));
        let mailbox = limit(
            &self.addr,
            self.timeout,
            "EXAMINE",
            self.session.examine(&folder),
        )
        .await?
        .map_err(fail)?;
        self.folder_state(folder, &mailbox)
    }

    fn folder_state(
        &self,
        folder: String,
        mailbox: &async_imap::types::Mailbox,
    ) -> Result<FolderState> {
        let Some(uidvalidity) = mailbox.uid_validity else {
            return Err(SourceError::NoUidValidity {
                addr: self.addr.clone(),
                folder,
            });
        };
        // NOTE: A server that lists PERMANENTFLAGS without `\*` accepts a
        // STORE of a new keyword with OK and then does not keep it
        // (Exchange Online does this).
        let keeps_keywords = mailbox.permanent_flags.is_empty()
            || mailbox
                .permanent_flags
                .iter()
                .any(|flag| matches!(flag, async_imap::types::Flag::MayCreate));
        Ok(FolderState {
            uidvalidity,
            uid_next: mailbox.uid_next,
            exists: mailbox.exists,
            keeps_keywords,
        })
    }

    /// UIDs at or above `first`, ascending.
    pub async fn uids_from(&mut self, first: u32) -> Result<Vec<u32>> {
        let found = self
            .search(
                &format!("UID {first}:*"),
                format!("search for UIDs from {first}"),
            )
            .await?;
        // NOTE: `N:*` matches the highest UID even when it is below N
        // (RFC 3501 §6.4.8), so filter.
        Ok(found.into_iter().filter(|uid| first <= *uid).collect())
    }

    /// Which of these UIDs the folder still holds.
    pub async fn existing(&mut self, uids: &[u32]) -> Result<Vec<u32>> {
        let mut found = Vec::new();
        for group in uids.chunks(UIDS_PER_COMMAND) {
            let set = uid_set(group);
            let listed = self
                .search(&format!("UID {set}"), format!("search for UIDs {set}"))
                .await?;
            found.extend(listed.into_iter().filter(|uid| group.contains(uid)));
        }
        found.sort_unstable();
        Ok(found)
    }

    /// The RFC822.SIZE of each of these UIDs, without fetching bodies, so
    /// batches can be bounded in bytes as well as in count. Asked in groups,
    /// so neither the command line nor the answer grows with the folder.
    pub async fn sizes(&mut self, uids: &[u32]) -> Result<Vec<(u32, u64)>> {
        let mut sizes = Vec::with_capacity(uids.len());
        for group in uids.chunks(UIDS_PER_COMMAND) {
            match self.sizes_of(group, &mut sizes).await {
                // NOTE: A server may refuse even the size of a message it
                // cannot read. Asked one by one, the others get theirs; that
                // one's stays unknown, and its own fetch will say more.
                Err(err) if err.is_refusal() => {
                    for uid in group.iter().filter(|_| 1 < group.len()) {
                        match self.sizes_of(&[*uid], &mut sizes).await {
                            Err(err) if err.is_refusal() => (),
                            other => other?,
                        }
                    }
                }
                other => other?,
            }
        }
        Ok(sizes)
    }

    /// One `UID FETCH (UID RFC822.SIZE)`, adding what it returns to `sizes`.
    async fn sizes_of(&mut self, uids: &[u32], sizes: &mut Vec<(u32, u64)>) -> Result<()> {
        let set = uid_set(uids);
        let timeout = self.timeout;
        self.run_checked(
            &format!("UID FETCH {set} (UID RFC822.SIZE)"),
            ("UID FETCH", timeout),
            format!("fetch sizes of UIDs {set}"),
            |response| {
                if let Response::Fetch(_, attributes) = response {
                    let uid = attributes.iter().find_map(|attribute| match attribute {
                        AttributeValue::Uid(uid) => Some(*uid),
                        _ => None,
                    });
                    let size = attributes.iter().find_map(|attribute| match attribute {
                        AttributeValue::Rfc822Size(size) => Some(u64::from(*size)),
                        _ => None,
                    });
                    if let (Some(uid), Some(size)) = (uid, size) {
                        sizes.push((uid, size));
                    }
                }
            },
        )
        .await
    }

    /// UIDs in the selected folder whose Message-ID header is `message_id`
    /// (without angle brackets).
    pub async fn uids_with_message_id(&mut self, message_id: &str) -> Result<Vec<u32>> {
        let quoted = format!("\"<{}>\"", message_id.replace(['\\', '"'], ""));
        self.search(
            &format!("HEADER Message-ID {quoted}"),
            format!("search for Message-ID <{message_id}>"),
        )
        .await
    }

    /// `UID SEARCH criteria`, ascending.
    async fn search(&mut self, criteria: &str, description: String) -> Result<Vec<u32>> {
        let mut uids = Vec::new();
        let timeout = self.timeout;
        self.run_checked(
            &format!("UID SEARCH {criteria}"),
            ("UID SEARCH", timeout),
            description,
            |response| {
                if let Response::MailboxData(MailboxDatum::Search(found)) = response {
                    uids.extend_from_slice(found);
                }
            },
        )
        .await?;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// Runs one command, hands each untagged response to `each`, and
    /// fails unless the command's own tagged reply is OK.
    ///
    /// NOTE: async-imap's SEARCH, FETCH and STORE end at the tagged reply
    /// without reading its status: a NO or BAD (a degraded server, a
    /// message it cannot read, a read-only folder) looked like success with
    /// fewer results. Those commands all go through here instead.
    async fn run_checked(
        &mut self,
        command: &str,
        (operation, timeout): (&'static str, Duration),
        description: String,
        each: impl FnMut(&Response<'_>),
    ) -> Result<()> {
        // NOTE: `timeout` bounds each response; the whole command gets ten
        // times that, so a server (or middlebox) that keeps sending
        // untagged lines cannot keep one command alive for ever.
        let whole = timeout.saturating_mul(COMMAND_DEADLINE_FACTOR);
        self.run_checked_within(command, (operation, timeout, whole), description, each)
            .await
    }

    /// [`ImapSource::run_checked`] with the whole command's deadline given.
    async fn run_checked_within(
        &mut self,
        command: &str,
        (operation, timeout, whole): (&'static str, Duration, Duration),
        description: String,
        mut each: impl FnMut(&Response<'_>),
    ) -> Result<()> {
        let addr = self.addr.clone();
        let fail = |source| SourceError::Command {
            addr: addr.clone(),
            operation: description.clone(),
            source,
        };
        let exchange = async {
            let tag = limit(&addr, timeout, operation, self.session.run_command(command))
                .await?
                .map_err(fail)?;
            loop {
                let response = limit(&addr, timeout, operation, self.session.read_response())
                    .await?
                    .map_err(|io| fail(async_imap::error::Error::Io(io)))?
                    .ok_or_else(|| fail(async_imap::error::Error::ConnectionLost))?;
                match response.parsed() {
                    Response::Done {
                        tag: done,
                        status,
                        information,
                        ..
                    } if *done == tag => {
                        let text = information.as_deref().unwrap_or_default().to_owned();
                        return match status {
                            Status::Ok => Ok(()),
                            Status::No => Err(fail(async_imap::error::Error::No(text))),
                            _ => Err(fail(async_imap::error::Error::Bad(text))),
                        };
                    }
                    other => each(other),
                }
            }
        };
        limit(&addr, whole, operation, exchange).await?
    }

    /// Fetches the full bytes of these UIDs in one command. UIDs that no
    /// longer exist are simply absent from the result. `largest` is the
    /// largest RFC822.SIZE among them: each message's response may take the
    /// timeout plus a second per MiB of it (at least 1 MiB/s), as SMTP's
    /// DATA may, so a large message on a slow link is not cut off.
    ///
    /// The whole command may take ten times the timeout, plus a second per
    /// MiB of all of them (`total`) and a second per message, so a large
    /// batch, or a server that converts each message, has its time.
    pub async fn fetch(&mut self, uids: &[u32], largest: u64, total: u64) -> Result<Vec<RawMail>> {
        let timeout = self.timeout + Duration::from_secs(largest / (1024 * 1024));
        let whole = self.timeout.saturating_mul(COMMAND_DEADLINE_FACTOR)
            + Duration::from_secs(total / (1024 * 1024) + uids.len() as u64);
        self.fetch_items(uids, "(UID RFC822.SIZE BODY.PEEK[])", (timeout, whole))
            .await
    }

    /// Fetches only the header blocks of these UIDs: for messages too large
    /// to forward, whose bodies need not be read at all.
    pub async fn fetch_headers(&mut self, uids: &[u32]) -> Result<Vec<RawMail>> {
        let whole = self.timeout.saturating_mul(COMMAND_DEADLINE_FACTOR);
        self.fetch_items(
            uids,
            "(UID RFC822.SIZE BODY.PEEK[HEADER])",
            (self.timeout, whole),
        )
        .await
    }

    async fn fetch_items(
        &mut self,
        uids: &[u32],
        items: &str,
        timeouts: (Duration, Duration),
    ) -> Result<Vec<RawMail>> {
        let mut mails = Vec::with_capacity(uids.len());
        for group in uids.chunks(UIDS_PER_COMMAND) {
            self.fetch_group(group, items, timeouts, &mut mails).await?;
        }
        Ok(mails)
    }

    /// One `UID FETCH set items`, adding the messages it returns to `mails`.
    async fn fetch_group(
        &mut self,
        uids: &[u32],
        items: &str,
        (timeout, whole): (Duration, Duration),
        mails: &mut Vec<RawMail>,
    ) -> Result<()> {
        let set = uid_set(uids);
        self.run_checked_within(
            &format!("UID FETCH {set} {items}"),
            ("UID FETCH", timeout, whole),
            format!("fetch UIDs {set}"),
            |response| {
                // NOTE: Untagged FETCH responses about flag changes made by
                // other clients can arrive here too; they carry no body.
                let Response::Fetch(_, attributes) = response else {
                    return;
                };
                let mut uid = None;
                let mut size = None;
                let mut body = None;
                for attribute in attributes {
                    match attribute {
                        AttributeValue::Uid(value) => uid = Some(*value),
                        AttributeValue::Rfc822Size(value) => size = Some(u64::from(*value)),
                        AttributeValue::BodySection {
                            data: Some(data), ..
                        } => body = Some(data.to_vec()),
                        _ => (),
                    }
                }
                if let (Some(uid), Some(bytes)) = (uid, body) {
                    mails.push(RawMail {
                        uid,
                        size: size.unwrap_or(bytes.len() as u64),
                        bytes,
                    });
                }
            },
        )
        .await
    }

    /// The one place deskbridge changes the mailbox: adds flags to these
    /// UIDs and, when asked, moves them (creating the folder if needed).
    ///
    /// # Errors
    /// A refused STORE, CREATE or MOVE.
    pub async fn settle(&mut self, uids: &[u32], settlement: &Settlement) -> Result<()> {
        for group in uids.chunks(UIDS_PER_COMMAND) {
            self.settle_group(group, settlement).await?;
        }
        Ok(())
    }

    async fn settle_group(&mut self, uids: &[u32], settlement: &Settlement) -> Result<()> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        let addr = self.addr.clone();
        let timeout = self.timeout;
        let flagged = self
            .run_checked(
                &format!("UID STORE {set} +FLAGS.SILENT ({})", settlement.flags),
                ("UID STORE", timeout),
                format!("set flags {} on UIDs {set}", settlement.flags),
                |_| (),
            )
            .await;
        let Some(path) = &settlement.move_to else {
            return flagged;
        };
        // NOTE: When the messages are to be moved, the move is what shows
        // where they went: a server that refuses the keywords must not
        // keep them in place.
        match flagged {
            Err(err) if err.is_refusal() => {
                tracing::warn!(server = %addr, uids = %set, error.message = %err, "the flags were refused; moving the messages anyway");
            }
            other => other?,
        }
        let folder = self.server_folder(path);
        self.ensure_folder(&folder).await?;
        let fail = self.command_error(format!("move UIDs {set} to {folder}"));
        if self.can_move {
            limit(
                &addr,
                timeout,
                "UID MOVE",
                self.session.uid_mv(&set, &folder),
            )
            .await?
            .map_err(fail)?;
            return Ok(());
        }
        // NOTE: Without MOVE (RFC 6851), COPY then mark deleted. UID
        // EXPUNGE (UIDPLUS) removes only these messages; without it the
        // originals stay marked \Deleted for the user's client to expunge,
        // because a plain EXPUNGE would also remove other clients' deletions.
        limit(
            &addr,
            timeout,
            "UID COPY",
            self.session.uid_copy(&set, &folder),
        )
        .await?
        .map_err(fail)?;
        // NOTE: Once the copy is made, the messages are settled: failing
        // here would copy them again on every pass. An original that cannot
        // be removed (no delete right) is left for a person, and said so.
        let mut removed = self
            .run_checked(
                &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
                ("UID STORE", timeout),
                format!("mark UIDs {set} deleted after copying them to {folder}"),
                |_| (),
            )
            .await;
        if removed.is_ok() && self.can_uid_expunge {
            removed = self
                .run_checked(
                    &format!("UID EXPUNGE {set}"),
                    ("UID EXPUNGE", timeout),
                    format!("expunge UIDs {set} after copying them to {folder}"),
                    |_| (),
                )
                .await;
        }
        if let Err(err) = removed {
            tracing::warn!(server = %addr, uids = %set, folder = %folder, error.message = %err, "copied, but the originals could not be removed; delete them by hand");
        }
        Ok(())
    }

    /// Whether the server has a folder, named as the server names it
    /// ([`ImapSource::server_folder`]).
    ///
    /// # Errors
    /// The LIST command failed.
    pub async fn folder_exists(&mut self, folder: &str) -> Result<bool> {
        let timeout = self.timeout;
        let quoted = format!("\"{}\"", folder.replace('\\', "\\\\").replace('"', "\\\""));
        let mut exists = false;
        let wildcards = folder.contains(['%', '*']);
        self.run_checked(
            &format!("LIST \"\" {quoted}"),
            ("LIST", timeout),
            format!("look up folder {folder}"),
            |response| {
                // NOTE: Without wildcards only the folder itself answers,
                // though in the server's spelling (Exchange keeps the
                // stored letter case): any answer counts. `%` and `*` are
                // LIST wildcards, so then other folders can answer, and
                // only the name itself counts. A server may also list a
                // name that does not exist as \NonExistent (RFC 5258).
                if let Response::MailboxData(MailboxDatum::List {
                    name,
                    name_attributes,
                    ..
                }) = response
                {
                    exists |= (!wildcards || same_folder(name, folder))
                        && !name_attributes.iter().any(|attribute| {
                            matches!(attribute, NameAttribute::Extension(extension)
                                if extension.eq_ignore_ascii_case("\\NonExistent"))
                        });
                }
            },
        )
        .await?;
        Ok(exists)
    }

    /// Whether the server offers MOVE (RFC 6851); without it a move is a
    /// COPY, then a delete.
    pub fn can_move(&self) -> bool {
        self.can_move
    }

    /// Whether the server offers UIDPLUS, so a copy's original can be
    /// expunged alone (`UID EXPUNGE`).
    pub fn can_uid_expunge(&self) -> bool {
        self.can_uid_expunge
    }

    async fn ensure_folder(&mut self, folder: &str) -> Result<()> {
        if self.known_folders.contains(folder) {
            return Ok(());
        }
        let addr = self.addr.clone();
        let timeout = self.timeout;
        if !self.folder_exists(folder).await? {
            let fail = self.command_error(format!("create folder {folder}"));
            match limit(&addr, timeout, "CREATE", self.session.create(folder)).await? {
                Ok(()) => (),
                // NOTE: LIST and the server can disagree on a name's
                // spelling; a folder that is there is what the move needs.
                Err(err) if err.to_string().contains("ALREADYEXISTS") => (),
                Err(err) => return Err(fail(err)),
            }
        }
        self.known_folders.insert(folder.to_owned());
        Ok(())
    }

    /// Ends the session politely; failures here change nothing.
    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.session.logout()).await;
    }
}

/// UIDs per SEARCH, FETCH of sizes, or STORE: a set of scattered UIDs
/// must stay well inside servers' command-line limits (RFC 7162 §4 asks
/// clients to keep to about 8 KB).
const UIDS_PER_COMMAND: usize = 500;

/// Whether a name from LIST is `folder`; INBOX in any letter case is INBOX
/// (RFC 3501 §5.1).
fn same_folder(listed: &str, folder: &str) -> bool {
    listed == folder
        || (listed.eq_ignore_ascii_case("INBOX") && folder.eq_ignore_ascii_case("INBOX"))
}

/// A command may take this many times the time allowed for one response.
const COMMAND_DEADLINE_FACTOR: u32 = 10;

/// Runs one network step under the timeout.
async fn limit<T>(
    addr: &str,
    timeout: Duration,
    operation: &'static str,
    step: impl Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(timeout, step)
        .await
        .map_err(|_| SourceError::TimedOut {
            addr: addr.to_owned(),
            operation,
            secs: timeout.as_secs(),
        })
}

/// Compresses sorted or unsorted UIDs into an IMAP sequence set: `1:3,7,9:10`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut index = 0;
    while index < sorted.len() {
        let start = sorted[index];
        let mut end = start;
        while index + 1 < sorted.len() && Some(sorted[index + 1]) == end.checked_add(1) {
            index += 1;
            end = sorted[index];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compressed() {
        assert_eq!(uid_set(&[3, 1, 2, 7, 9, 10, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn greetings_that_end_the_session_say_why() {
        assert!(check_greeting(Ok(Some(None)), "imap.test:993").is_ok());
        let told = |greeting| {
            check_greeting(greeting, "imap.test:993")
                .expect_err("refused")
                .to_string()
        };
        let bye = told(Ok(Some(Some("Too many connections".to_owned()))));
        assert!(bye.contains("imap.test:993"), "{bye}");
        assert!(bye.contains("BYE Too many connections"), "{bye}");
        assert!(told(Ok(None)).contains("closed the connection before its greeting"));
        let io = told(Err(std::io::Error::other(
            "received fatal alert: CertificateRequired",
        )));
        assert!(io.contains("reading the server's greeting failed"), "{io}");
        assert!(io.contains("CertificateRequired"), "{io}");
    }
}
