//! The test harness: the running local mail stack, a fresh mailbox pair
//! and database per test, an IMAP client for seeding and reading, and a
//! switch for Postfix's per-recipient 4xx/5xx answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use async_imap::Session;
use deskbridge::config::{self, Settings};
use deskbridge::store::{MessageFilter, MessageRow, State, Store};
use deskbridge::worker::{self, PassReport};
use futures::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The ports and files of the stack that `scripts/stack-up` started.
#[derive(Debug, Clone)]
pub struct Stack {
    pub imaps_port: u16,
    pub imap_port: u16,
    pub submission_port: u16,
    pub smtps_port: u16,
    pub password: String,
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub access_map: PathBuf,
    /// The stack Postfix's config directory, for `postqueue -c`.
    pub postfix_dir: PathBuf,
    /// The key that signs OAuth 2.0 tokens the stack's Dovecot accepts.
    pub oauth_key: String,
    pub dir: PathBuf,
}

impl Stack {
    /// Reads `stack.env` and checks that the servers answer. A missing stack
    /// is a loud failure that names the command that fixes it.
    pub fn get() -> Stack {
        let dir = std::env::var_os("DESKBRIDGE_STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/deskbridge-stack"));
        let env_file = dir.join("stack.env");
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|err| {
            panic!(
                "the local mail stack is not running ({}: {err}); start it with `sudo bash scripts/stack-up`, or run everything with `bash scripts/test`",
                env_file.display()
            )
        });
        let value = |key: &str| -> String {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| {
                    panic!("{} lacks {key}; rerun scripts/stack-up", env_file.display())
                })
                .to_owned()
        };
        let port = |key: &str| -> u16 { value(key).parse().expect("port number") };
        let stack = Stack {
            imaps_port: port("STACK_IMAPS_PORT"),
            imap_port: port("STACK_IMAP_PORT"),
            submission_port: port("STACK_SUBMISSION_PORT"),
            smtps_port: port("STACK_SMTPS_PORT"),
            password: value("STACK_PASSWORD"),
            ca: PathBuf::from(value("STACK_CA")),
            wrong_ca: PathBuf::from(value("STACK_WRONG_CA")),
            access_map: PathBuf::from(value("STACK_ACCESS_MAP")),
            postfix_dir: PathBuf::from(value("STACK_POSTFIX_DIR")),
            oauth_key: value("STACK_OAUTH_KEY"),
            dir,
        };
        for (port, what) in [
            (stack.imaps_port, "Dovecot IMAPS"),
            (stack.imap_port, "Dovecot IMAP (STARTTLS)"),
            (stack.submission_port, "Postfix submission"),
            (stack.smtps_port, "Postfix SMTPS"),
        ] {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                panic!(
                    "{what} does not answer on 127.0.0.1:{port}; start the stack with `sudo bash scripts/stack-up`"
                );
            }
        }
        stack
    }
}

/// One test's world: a support mailbox, a helpdesk mailbox, a database.
pub struct TestEnv {
    pub stack: Stack,
    pub support_user: String,
    pub helpdesk_user: String,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    /// Fresh, unique mailbox names so tests run in parallel.
    pub fn new(name: &str) -> TestEnv {
        let stack = Stack::get();
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
                % 1_000_000_000
        );
        let dir = tempfile::tempdir().expect("tempdir");
        write_secret(&dir.path().join("password"), &stack.password);
        TestEnv {
            support_user: format!("{unique}@support.test"),
            helpdesk_user: format!("{unique}@helpdesk.test"),
            stack,
            dir,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("deskbridge.db")
    }

    /// A config file text for this world; `extra_mailbox` lines are added
    /// to the mailbox section.
    pub fn config_text(&self, options: &ConfigOptions) -> String {
        let smtp_port = match options.smtp_tls {
            "implicit" => self.stack.smtps_port,
            _ => self.stack.submission_port,
        };
        let imap_port = match (options.imap_port, options.imap_tls) {
            (Some(port), _) => port,
            (None, "starttls") => self.stack.imap_port,
            (None, _) => self.stack.imaps_port,
        };
        format!(
            r#"
[store]
path = "deskbridge.db"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "{smtp_tls}"
ca_file = "{smtp_ca}"
username = "bridge@company.test"
password_file = "password"
envelope_from = "bridge@company.test"
helo_name = "bridge.company.test"
timeout_secs = 20

[[mailbox]]
name = "support"
host = "127.0.0.1"
port = {imap_port}
tls = "{imap_tls}"
ca_file = "{imap_ca}"
username = "{support}"
password_file = "{imap_password}"
forward_to = "{helpdesk}"
timeout_secs = {imap_timeout}
{extra}
"#,
            smtp_tls = options.smtp_tls,
            smtp_ca = options.smtp_ca.as_ref().unwrap_or(&self.stack.ca).display(),
            imap_tls = options.imap_tls,
            imap_ca = options.imap_ca.as_ref().unwrap_or(&self.stack.ca).display(),
            support = self.support_user,
            imap_password = options.imap_password_file.as_deref().unwrap_or("password"),
            helpdesk = self.helpdesk_user,
            imap_timeout = options.imap_timeout_secs,
            extra = options.extra_mailbox,
        )
    }

    /// Writes the config file and returns its path.
    pub fn write_config(&self, options: &ConfigOptions) -> PathBuf {
        let path = self.dir.path().join("deskbridge.toml");
        std::fs::write(&path, self.config_text(options)).expect("write config");
        path
    }

    /// Validated settings, through the real config loader.
    pub fn settings(&self, options: &ConfigOptions) -> Settings {
        let path = self.write_config(options);
        config::load(&path).expect("test config is valid")
    }

    /// The support mailbox's Maildir on disk, for tests that change what
    /// Dovecot finds there.
    pub fn support_maildir(&self) -> PathBuf {
        let (local, domain) = self.support_user.split_once('@').expect("user");
        self.stack
            .dir
            .join("mail")
            .join(domain)
            .join(local)
            .join("Maildir")
    }

    /// The message files of the support INBOX.
    pub fn support_files(&self) -> Vec<PathBuf> {
        let maildir = self.support_maildir();
        ["cur", "new"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(maildir.join(sub)).expect("maildir"))
            .map(|entry| entry.expect("entry").path())
            .collect()
    }

    /// The one message file of the support INBOX that contains `needle`.
    pub fn support_file_with(&self, needle: &str) -> PathBuf {
        let mut found: Vec<PathBuf> = self
            .support_files()
            .into_iter()
            .filter(|path| {
                String::from_utf8_lossy(&std::fs::read(path).expect("read")).contains(needle)
            })
            .collect();
        assert_eq!(found.len(), 1, "one file holds {needle}");
        found.pop().expect("one file")
    }

    /// Appends messages to the support INBOX.
    pub async fn seed<M: AsRef<[u8]>>(&self, messages: &[M]) {
        let mut session = imap_login(&self.stack, &self.support_user).await;
        for message in messages {
            session
                .append("INBOX", None, None, message.as_ref())
                .await
                .expect("APPEND to the support mailbox");
        }
        let _ = session.logout().await;
    }
}

/// A second `[[mailbox]]` section polling `source`'s support mailbox and
/// forwarding to `forward_to`, for tests with two mailboxes in one pass.
pub fn second_mailbox(stack: &Stack, name: &str, source: &TestEnv, forward_to: &str) -> String {
    format!(
        "\n[[mailbox]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\nca_file = \"{}\"\nusername = \"{}\"\npassword_file = \"password\"\nforward_to = \"{forward_to}\"\n",
        stack.imaps_port,
        stack.ca.display(),
        source.support_user,
    )
}

/// Options that tests vary in the generated config.
#[derive(Debug, Clone)]
pub struct ConfigOptions {
    pub imap_tls: &'static str,
    pub smtp_tls: &'static str,
    pub imap_ca: Option<PathBuf>,
    pub smtp_ca: Option<PathBuf>,
    pub imap_password_file: Option<String>,
    /// Overrides the IMAP port (e.g. to point at a server that hangs).
    pub imap_port: Option<u16>,
    pub imap_timeout_secs: u64,
    pub extra_mailbox: String,
}

impl Default for ConfigOptions {
    fn default() -> ConfigOptions {
        ConfigOptions {
            imap_tls: "implicit",
            smtp_tls: "starttls",
            imap_ca: None,
            smtp_ca: None,
            imap_password_file: None,
            imap_port: None,
            imap_timeout_secs: 20,
            extra_mailbox: String::new(),
        }
    }
}

/// The log's rows in one state, read from a fresh connection.
pub fn rows_in_state(settings: &Settings, state: State) -> Vec<MessageRow> {
    Store::open(&settings.store_path)
        .expect("open log")
        .list_messages(&MessageFilter {
            state: Some(state),
            ..MessageFilter::default()
        })
        .expect("rows")
}

/// Runs one pass through the library, as `deskbridge run` does.
pub async fn run_pass(settings: &Settings) -> anyhow::Result<PassReport> {
    let stop = Arc::new(AtomicBool::new(false));
    worker::run_once(settings, &stop).await
}

pub type ImapSession = Session<TlsStream<TcpStream>>;

/// Logs in to the stack's IMAPS as `user`, verifying the stack CA.
pub async fn imap_login(stack: &Stack, user: &str) -> ImapSession {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&stack.ca).expect("read CA") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", stack.imaps_port))
        .await
        .expect("connect IMAPS");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("TLS to IMAPS");
    let mut client = async_imap::Client::new(tls);
    client.read_response().await.expect("greeting");
    client
        .login(user, &stack.password)
        .await
        .map_err(|(err, _)| err)
        .expect("test login")
}

/// A message as seen over IMAP: its bytes and flags.
#[derive(Debug, Clone)]
pub struct Seen {
    pub uid: u32,
    pub bytes: Vec<u8>,
    pub flags: Vec<String>,
}

/// Every message of `folder` (bytes fetched with PEEK), in UID order. The
/// folder must exist: a test that counts an unreadable folder as empty
/// would pass for the wrong reason.
pub async fn read_folder(stack: &Stack, user: &str, folder: &str) -> Vec<Seen> {
    read_folder_if_any(stack, user, folder)
        .await
        .unwrap_or_else(|| panic!("{user} has no folder {folder}"))
}

/// As [`read_folder`], `None` when the folder does not exist (yet).
pub async fn read_folder_if_any(stack: &Stack, user: &str, folder: &str) -> Option<Vec<Seen>> {
    let mut session = imap_login(stack, user).await;
    let names: Vec<String> = session
        .list(None, Some(folder))
        .await
        .expect("LIST")
        .map(|name| name.expect("LIST item").name().to_owned())
        .collect()
        .await;
    if !names.iter().any(|name| name == folder) {
        let _ = session.logout().await;
        return None;
    }
    session
        .select(folder)
        .await
        .unwrap_or_else(|err| panic!("SELECT {folder} of {user}: {err}"));
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])")
        .await
        .expect("fetch")
        .collect()
        .await;
    let mut seen = Vec::new();
    for fetch in fetches {
        let fetch = fetch.expect("fetch item");
        let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) else {
            panic!("a FETCH reply in {folder} of {user} lacks its UID or body: {fetch:?}");
        };
        seen.push(Seen {
            uid,
            bytes: body.to_vec(),
            flags: fetch.flags().map(|flag| format!("{flag:?}")).collect(),
        });
    }
    let _ = session.logout().await;
    seen.sort_by_key(|message| message.uid);
    Some(seen)
}

/// Waits until the stack's Postfix holds nothing more for `address` in
/// any queue. After a pass, everything it handed to Postfix for that
/// address has then been delivered, and nothing more can arrive: the fixed
/// point for "exactly once" and "nothing" checks, where a fixed sleep
/// would miss a late copy on a busy machine.
///
/// NOTE: `postqueue -j` reads the queue folders one after another, so a
/// message moving between two of them (incoming or deferred to active) can
/// be missed by one listing. Two clear listings 200 ms apart cannot both
/// miss it: by the second it is listed or delivered.
pub async fn wait_until_queue_clear(stack: &Stack, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut clear_in_a_row = 0;
    while clear_in_a_row < 2 {
        if queue_holds(stack, address) {
            clear_in_a_row = 0;
            assert!(
                Instant::now() < deadline,
                "Postfix still queues mail for {address} after 60 s; see {}/log",
                stack.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            clear_in_a_row += 1;
            if clear_in_a_row < 2 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Whether one listing of the stack Postfix's queues has mail for `address`.
fn queue_holds(stack: &Stack, address: &str) -> bool {
    // Debian puts postqueue in /usr/sbin, which a user's PATH may lack.
    let postqueue = ["/usr/sbin/postqueue", "/usr/local/sbin/postqueue"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("postqueue");
    let output = std::process::Command::new(postqueue)
        .arg("-c")
        .arg(&stack.postfix_dir)
        .arg("-j")
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run {postqueue} ({err}); install the stack with `sudo bash scripts/stack-install`")
        });
    assert!(
        output.status.success(),
        "{postqueue} -c {} -j: {}",
        stack.postfix_dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .any(|line| {
            let entry: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("postqueue -j printed {line:?}: {err}"));
            entry["recipients"].as_array().is_some_and(|recipients| {
                recipients.iter().any(|recipient| {
                    recipient["address"]
                        .as_str()
                        .is_some_and(|queued| queued.eq_ignore_ascii_case(address))
                })
            })
        })
}

/// The helpdesk INBOX once Postfix has delivered everything it took for
/// it ([`wait_until_queue_clear`]), which must be exactly `expected`
/// messages: the passes have ended, so this is all that will ever arrive
/// from them, and a copy sent twice is already there.
pub async fn wait_for_helpdesk(env: &TestEnv, expected: usize) -> Vec<Seen> {
    // First the expected number, as a second guard besides the queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_folder(&env.stack, &env.helpdesk_user, "INBOX")
        .await
        .len()
        < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until_queue_clear(&env.stack, &env.helpdesk_user).await;
    let messages = read_folder(&env.stack, &env.helpdesk_user, "INBOX").await;
    assert_eq!(
        messages.len(),
        expected,
        "messages in the helpdesk's INBOX once Postfix's queue is clear"
    );
    messages
}

/// The original bytes of each delivered message (deskbridge's trace block
/// removed), sorted: Postfix delivers over several LMTP connections, so
/// arrival order is not sending order.
pub fn sorted_originals(delivered: &[Seen]) -> Vec<Vec<u8>> {
    let mut originals: Vec<Vec<u8>> = delivered
        .iter()
        .map(|seen| split_delivered(&seen.bytes).1)
        .collect();
    originals.sort();
    originals
}

/// Splits a delivered message into deskbridge's trace block and the bytes
/// that followed it, dropping what Postfix and Dovecot put above it.
pub fn split_delivered(delivered: &[u8]) -> (String, Vec<u8>) {
    let text = delivered;
    let marker = b"Received: from 127.0.0.1 (mailbox ";
    let start = find(text, marker).expect("deskbridge's Received line is present");
    let resent_to = find(&text[start..], b"Resent-To: ").expect("Resent-To present") + start;
    let end = resent_to + find(&text[resent_to..], b"\r\n").expect("line end") + 2;
    (
        String::from_utf8_lossy(&text[start..end]).into_owned(),
        text[end..].to_vec(),
    )
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Makes Postfix answer `reply` (e.g. `450 4.2.0 busy`) to RCPT TO
/// `recipient`, or removes the entry. Serialised with flock because tests
/// in parallel share the map.
pub fn set_recipient_access(stack: &Stack, recipient: &str, reply: Option<&str>) {
    let map = stack.access_map.display().to_string();
    let line = reply.map(|reply| format!("{recipient} {reply}"));
    let script = match &line {
        Some(line) => format!(
            "grep -vF '{recipient} ' {map} > {map}.new; echo '{line}' >> {map}.new; mv {map}.new {map}; postmap {map}"
        ),
        None => {
            format!("grep -vF '{recipient} ' {map} > {map}.new; mv {map}.new {map}; postmap {map}")
        }
    };
    let status = std::process::Command::new("flock")
        .arg(format!("{map}.lock"))
        .arg("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .expect("run flock");
    assert!(status.success(), "updating {map} failed");
}

/// A plain test message with CRLF line ends.
pub fn message(from: &str, subject: &str, message_id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support@company.test\r\nSubject: {subject}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// `count` small messages from as many senders, so the per-correspondent
/// rate limit never applies; Message-IDs are `<tag>.<n>@example.org`.
pub fn backlog(tag: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| {
            message(
                &format!("S{index} <s{index}@example.org>"),
                &format!("Backlog {index}"),
                &format!("{tag}.{index}@example.org"),
                "backlog",
            )
        })
        .collect()
}

/// The path of the built `deskbridge` binary.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_deskbridge"))
}

/// A fake SMTP server on loopback for failures Postfix will not stage: it
/// greets, offers STARTTLS, answers STARTTLS with `220` followed by
/// `after_starttls` in the same write, then speaks TLS with the stack's
/// certificate, answering each command line with `answer` (None: it drops
/// the connection). Returns its port; it serves until the test ends.
pub async fn fake_smtp(
    stack: &Stack,
    after_starttls: &'static [u8],
    answer: fn(&str) -> Option<&'static [u8]>,
) -> u16 {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

    let acceptor = stack_tls_acceptor(stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut plain = BufReader::new(tcp);
                let mut line = String::new();
                if plain.write_all(b"220 fake ESMTP\r\n").await.is_err() {
                    return;
                }
                while plain.read_line(&mut line).await.is_ok_and(|read| 0 < read) {
                    let command = std::mem::take(&mut line).to_ascii_uppercase();
                    if command.starts_with("EHLO") {
                        let reply = b"250-fake\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
                        if plain.write_all(reply).await.is_err() {
                            return;
                        }
                    } else if command.starts_with("STARTTLS") {
                        let reply = [b"220 2.0.0 go ahead\r\n".as_slice(), after_starttls].concat();
                        if plain.write_all(&reply).await.is_err() {
                            return;
                        }
                        break;
                    }
                }
                let Ok(tls) = acceptor.accept(plain.into_inner()).await else {
                    return;
                };
                let mut secure = BufReader::new(tls);
                while secure.read_line(&mut line).await.is_ok_and(|read| 0 < read) {
                    let command = std::mem::take(&mut line).to_ascii_uppercase();
                    let Some(reply) = answer(&command) else {
                        return;
                    };
                    if secure.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A TLS acceptor with the stack's server certificate, for fake servers.
fn stack_tls_acceptor(stack: &Stack) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(stack.dir.join("tls/server.pem"))
            .expect("server certificate")
            .collect::<Result<_, _>>()
            .expect("server certificate");
    let key = PrivateKeyDer::from_pem_file(stack.dir.join("tls/server.key")).expect("key");
    let server_config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_config))
}

/// How [`fake_imap`] treats a FETCH of its refused message's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchRefusal {
    /// The other messages, then a tagged NO, as servers do for a message
    /// they cannot read (for sizes too).
    No,
    /// The other messages before it, then nothing more: the server stalls
    /// on it, as Exchange may converting one message.
    Stall,
    /// No message is refused, but the first UID STORE of the server's life
    /// drops its connection, as a NAT that forgot an idle session does.
    DropFirstStore,
    /// A FETCH of several bodies including it gets an untagged `* OK` line
    /// every 100 ms for ever, and never its answer; asked alone, it is
    /// served.
    Flood,
}

/// A fake IMAP server (implicit TLS, the stack's certificate) holding
/// `messages` as UIDs 1, 2, ... of INBOX, which answers a UID FETCH that
/// includes UID `refused` as `how` says. Everything else it accepts.
/// Returns its port; it serves until the test ends.
pub async fn fake_imap(
    stack: &Stack,
    messages: Vec<Vec<u8>>,
    refused: u32,
    how: FetchRefusal,
) -> u16 {
    fake_imap_with(stack, messages, (refused, how), "IMAP4rev1 MOVE UIDPLUS")
        .await
        .0
}

/// Every command line a [`fake_imap_with`] server received, in order.
pub type CommandLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`fake_imap`] offering `capabilities` after LOGIN (to play a server
/// without MOVE or UIDPLUS), and keeping the commands it received.
pub async fn fake_imap_with(
    stack: &Stack,
    messages: Vec<Vec<u8>>,
    (refused, how): (u32, FetchRefusal),
    capabilities: &'static str,
) -> (u16, CommandLog) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let log = CommandLog::default();

    let acceptor = stack_tls_acceptor(stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let messages = std::sync::Arc::new(messages);
    let stored_once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server_log = std::sync::Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let messages = std::sync::Arc::clone(&messages);
            let stored_once = std::sync::Arc::clone(&stored_once);
            let log = std::sync::Arc::clone(&server_log);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut conn = BufReader::new(tls);
                let count = messages.len() as u32;
                let mut out = b"* OK fake IMAP ready\r\n".to_vec();
                let mut line = String::new();
                loop {
                    if conn.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                    line.clear();
                    if !conn.read_line(&mut line).await.is_ok_and(|read| 0 < read) {
                        return;
                    }
                    let mut words = line.trim_end().splitn(3, ' ');
                    let tag = words.next().unwrap_or("*").to_owned();
                    let command = words.next().unwrap_or("").to_ascii_uppercase();
                    let rest = words.next().unwrap_or("").to_owned();
                    if let Ok(mut log) = log.lock() {
                        log.push(format!("{command} {rest}"));
                    }
                    let ok = format!("{tag} OK done\r\n");
                    let reply: Vec<u8> = match command.as_str() {
                        "LOGIN" => format!("{tag} OK [CAPABILITY {capabilities}] in\r\n").into(),
                        "LIST" => format!("* LIST () \"/\" \"\"\r\n{ok}").into(),
                        "SELECT" => format!(
                            "* {count} EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT {}] n\r\n{tag} OK [READ-WRITE] selected\r\n",
                            count + 1
                        )
                        .into(),
                        "LOGOUT" => format!("* BYE bye\r\n{ok}").into(),
                        "UID" => {
                            let mut parts = rest.splitn(3, ' ');
                            let verb = parts.next().unwrap_or("").to_ascii_uppercase();
                            let set = parts.next().unwrap_or("").to_owned();
                            let items = parts.next().unwrap_or("").to_ascii_uppercase();
                            let wanted: Vec<u32> =
                                (1..=count).filter(|uid| in_uid_set(&set, *uid, count)).collect();
                            match verb.as_str() {
                                "STORE"
                                    if how == FetchRefusal::DropFirstStore
                                        && !stored_once.swap(true, std::sync::atomic::Ordering::SeqCst) =>
                                {
                                    return;
                                }
                                "SEARCH" => {
                                    // `UID SEARCH UID <set>`: the set is the third word.
                                    let asked = items.trim_start_matches("UID ").to_owned();
                                    let found: Vec<String> = (1..=count)
                                        .filter(|uid| set != "UID" || in_uid_set(&asked, *uid, count))
                                        .map(|uid| uid.to_string())
                                        .collect();
                                    format!("* SEARCH {}\r\n{ok}", found.join(" ")).into()
                                }
                                "FETCH" if items.contains("BODY") => {
                                    let mut reply = Vec::new();
                                    for uid in &wanted {
                                        if *uid == refused && how == FetchRefusal::Stall {
                                            let _ = conn.write_all(&reply).await;
                                            std::future::pending::<()>().await;
                                        }
                                        if *uid == refused && how == FetchRefusal::Flood && 1 < wanted.len() {
                                            while conn.write_all(b"* OK still working\r\n").await.is_ok() {
                                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                                            }
                                            return;
                                        }
                                        if *uid == refused && how != FetchRefusal::Flood {
                                            continue;
                                        }
                                        let body = &messages[*uid as usize - 1];
                                        reply.extend(
                                            format!("* {uid} FETCH (UID {uid} RFC822.SIZE {} BODY[] {{{}}}\r\n", body.len(), body.len())
                                                .into_bytes(),
                                        );
                                        reply.extend_from_slice(body);
                                        reply.extend(b")\r\n");
                                    }
                                    if wanted.contains(&refused) && how != FetchRefusal::Flood {
                                        reply.extend(format!("{tag} NO [SERVERBUG] cannot read a message\r\n").into_bytes());
                                    } else {
                                        reply.extend(ok.into_bytes());
                                    }
                                    reply
                                }
                                "FETCH" => {
                                    let mut reply = String::new();
                                    let refuses = how == FetchRefusal::No;
                                    for uid in wanted.iter().filter(|uid| !refuses || **uid != refused) {
                                        let size = messages[*uid as usize - 1].len();
                                        reply.push_str(&format!("* {uid} FETCH (UID {uid} RFC822.SIZE {size})\r\n"));
                                    }
                                    if refuses && wanted.contains(&refused) {
                                        reply.push_str(&format!("{tag} NO cannot read a message\r\n"));
                                    } else {
                                        reply.push_str(&ok);
                                    }
                                    reply.into()
                                }
                                _ => ok.into(),
                            }
                        }
                        _ => ok.into(),
                    };
                    out = reply;
                }
            });
        }
    });
    (port, log)
}

/// Whether `uid` is in an IMAP sequence set such as `1:3,7` (`*` is `max`).
fn in_uid_set(set: &str, uid: u32, max: u32) -> bool {
    let value = |text: &str| {
        if text == "*" {
            Some(max)
        } else {
            text.parse().ok()
        }
    };
    set.split(',').any(|part| match part.split_once(':') {
        Some((low, high)) => match (value(low), value(high)) {
            (Some(low), Some(high)) => (low.min(high)..=low.max(high)).contains(&uid),
            _ => false,
        },
        None => value(part) == Some(uid),
    })
}

/// Writes a password or token file as a user would: one line, readable by
/// its owner only (deskbridge warns about others).
pub fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, format!("{secret}\n")).expect("write secret file");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600 the secret file");
}

/// An OAuth 2.0 access token for `user` as the stack's Dovecot checks it:
/// an HS256 JWT signed with the stack's key, issued now and expiring
/// `valid_secs` from now (in the past when negative).
pub fn oauth_token(stack: &Stack, user: &str, valid_secs: i64) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let header = encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "sub": user,
        "iat": now - 60,
        "exp": now + valid_secs,
    });
    let payload = encode(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(stack.oauth_key.as_bytes())
        .expect("any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", encode(&mac.finalize().into_bytes()))
}
