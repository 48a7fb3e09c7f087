//! The SMTP side: the only module that talks SMTP.
//!
//! Owns one submission session (implicit TLS, or STARTTLS that must
//! succeed), optional AUTH, and sending a redirect: MAIL FROM the configured
//! envelope sender, RCPT TO the helpdesk, and DATA of the trace block
//! followed by the original bytes. With PIPELINING, MAIL, RCPT and DATA go
//! out in one write, and a redirect can carry the next message's envelope
//! after its final dot, so a stream of messages costs one round trip each.
//! A 4xx or 5xx reply leaves the session usable for the next message
//! (RSET); a broken session is reported so the caller can drop it. Every
//! step runs under the configured timeout.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Severity;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{AuthMethod, SmtpSettings, TlsMode};
use crate::net;
use crate::tls::{self, TlsSetupError};

/// Errors opening the SMTP session. Every variant names the server.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot set up TLS for SMTP server {addr}: {source}")]
    TlsSetup {
        addr: String,
        #[source]
        source: TlsSetupError,
    },
    #[error("cannot connect to SMTP server {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("SMTP server {addr} did not answer within {secs} s during {operation}")]
    TimedOut {
        addr: String,
        operation: &'static str,
        secs: u64,
    },
    #[error("TLS with SMTP server {addr} failed: {message} ({hint})")]
    Tls {
        addr: String,
        message: String,
        hint: &'static str,
    },
    #[error("SMTP server {addr} does not offer STARTTLS, which tls = \"starttls\" requires")]
    NoStarttls { addr: String },
    #[error("SMTP server {addr} rejected AUTH for user {user}: {message}; {hint}")]
    Auth {
        addr: String,
        user: String,
        message: String,
        hint: &'static str,
    },
    #[error("SMTP server {addr}: {operation} failed: {message}")]
    Session {
        addr: String,
        operation: &'static str,
        message: String,
    },
}

/// How sending one message ended, when it did not end with 250.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A 4xx reply: try again on a later pass.
    #[error("{reply}")]
    Temporary { reply: String },
    /// A 5xx reply to the content: the server will not take this message.
    #[error("{reply}")]
    Permanent { reply: String },
    /// A 5xx reply to MAIL FROM, RCPT TO or DATA, before any content: the
    /// server refuses the envelope (the sender, the recipient, or this
    /// login's right to send), which names nothing of the message itself.
    #[error("{reply}")]
    EnvelopeRefused { reply: String },
    /// The session broke (network, timeout, protocol): the outcome of this
    /// message is unknown to the server's reply, so it stays pending.
    #[error("SMTP session with {addr} broke: {message}")]
    Broken {
        addr: String,
        message: String,
        /// The break came while or after the content was sent, so the
        /// server may have taken the message; before it, it cannot have.
        content_sent: bool,
    },
}

/// The message after the one being sent, whose envelope may go out with
/// that message's end ([`SmtpSink::send_then_open`]).
#[derive(Debug, Clone, Copy)]
pub struct NextMessage<'a> {
    pub forward_to: &'a str,
    pub trace: &'a [u8],
    pub original: &'a [u8],
}

/// What became of the next message's envelope.
#[derive(Debug)]
pub enum NextEnvelope {
    /// Not sent: no next message, no PIPELINING, or content too large to
    /// go out in one write. Send the next message the usual way.
    NotSent,
    /// The server answered DATA with 354: the session now waits for that
    /// message's content, and the next [`SmtpSink::send`] or
    /// [`SmtpSink::send_then_open`] sends it without a new envelope.
    Open,
    /// The server refused the envelope (4xx or 5xx to MAIL, RCPT or DATA),
    /// as a plain send would have reported it; reset before going on.
    Refused(SendError),
    /// The session broke before the envelope's replies came: nothing of the
    /// next message was sent, so it can go to another session.
    Lost,
}

/// What a server said to an envelope that [`SmtpSink::probe_envelope`]
/// tried without sending a message.
#[derive(Debug)]
pub enum EnvelopeProbe {
    /// The server took the sender (and the recipient); its last reply.
    Accepted(String),
    /// The server refused MAIL FROM (4xx or 5xx).
    SenderRefused(SendError),
    /// The server took the sender and refused RCPT TO (4xx or 5xx).
    RecipientRefused(SendError),
}

/// An open SMTP session, reused for every message of a pass.
pub struct SmtpSink {
    conn: AsyncSmtpConnection,
    /// The server offers PIPELINING (RFC 2920).
    pipelining: bool,
    /// The largest message the server takes, from its SIZE (RFC 1870); 0
    /// or absent means it names no limit.
    size_limit: Option<u64>,
    /// A pipelined envelope got 354: the next content belongs to it, and
    /// neither RSET nor QUIT may be sent until it has gone.
    data_open: bool,
    addr: String,
    timeout: Duration,
    envelope_from: Address,
}

impl std::fmt::Debug for SmtpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSink")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Opens a session: connect, TLS, EHLO, optional AUTH.
///
/// # Errors
/// Connection, TLS, STARTTLS or AUTH failures, each naming the server.
pub async fn connect(settings: &SmtpSettings) -> Result<SmtpSink, SinkError> {
    let addr = format!("{}:{}", settings.host, settings.port);
    let timeout = settings.timeout;
    let envelope_from =
        Address::from_str(&settings.envelope_from).map_err(|err| SinkError::Session {
            addr: addr.clone(),
            operation: "checking envelope_from",
            message: err.to_string(),
        })?;
    let tcp = limit(
        &addr,
        timeout,
        "connect",
        net::connect(&settings.host, settings.port, timeout),
    )
    .await?
    .map_err(|source| SinkError::Connect {
        addr: addr.clone(),
        source,
    })?;
    // NOTE: lettre writes the message and its final "\r\n.\r\n" separately;
    // with Nagle on, that small write waits ~40 ms for the server's delayed
    // ACK on every message.
    let _ = tcp.set_nodelay(true);
    let helo = ClientId::Domain(settings.helo_name.clone());
    let session_error = |operation: &'static str| {
        let addr = addr.clone();
        move |err: lettre::transport::smtp::Error| SinkError::Session {
            addr,
            operation,
            message: err.to_string(),
        }
    };
    let mut conn = match settings.tls {
        TlsMode::Implicit => {
            let config = tls::client_config(settings.ca_file.as_deref()).map_err(|source| {
                SinkError::TlsSetup {
                    addr: addr.clone(),
                    source,
                }
            })?;
            let server_name =
                ServerName::try_from(settings.host.clone()).map_err(|err| SinkError::Tls {
                    addr: addr.clone(),
                    message: err.to_string(),
                    hint: "the host is not a valid DNS name or IP address",
                })?;
            let stream = limit(
                &addr,
                timeout,
                "the TLS handshake",
                TlsConnector::from(config).connect(
                    server_name,
                    SmtpTcp::new(tcp, &Arc::new(AtomicBool::new(false))),
                ),
            )
            .await?
            .map_err(|err| SinkError::Tls {
                addr: addr.clone(),
                message: err.to_string(),
                hint: tls::explain(&err),
            })?;
            limit(
                &addr,
                timeout,
                "the greeting",
                AsyncSmtpConnection::connect_with_transport(Box::new(ImplicitTls(stream)), &helo),
            )
            .await?
            .map_err(session_error("greeting and EHLO"))?
        }
        TlsMode::Starttls => {
            let plaintext = Arc::new(AtomicBool::new(true));
            let mut conn = limit(
                &addr,
                timeout,
                "the greeting",
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(SmtpTcp::new(tcp, &plaintext)),
                    &helo,
                ),
            )
            .await?
            .map_err(session_error("greeting and EHLO"))?;
            if !conn.server_info().supports_feature(Extension::StartTls) {
                return Err(SinkError::NoStarttls { addr });
            }
            let parameters = starttls_parameters(settings, &addr)?;
            // NOTE: Still line by line through the TLS handshake: a reply
            // to STARTTLS with injected lines after it must fail here.
            limit(&addr, timeout, "STARTTLS", conn.starttls(parameters, &helo))
                .await?
                .map_err(|err| SinkError::Tls {
                    addr: addr.clone(),
                    message: err.to_string(),
                    hint: tls::explain(&err),
                })?;
            plaintext.store(false, Ordering::Relaxed);
            conn
        }
    };
    // NOTE: lettre keeps the EHLO keywords it knows and drops PIPELINING;
    // a second EHLO (allowed at any time, RFC 5321 §4.1.4), before AUTH,
    // reads it.
    let ehlo = limit(
        &addr,
        timeout,
        "EHLO",
        conn.command(Ehlo::new(helo.clone())),
    )
    .await?
    .map_err(session_error("EHLO"))?;
    let pipelining = ehlo
        .message()
        .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"));
    let size_limit = ehlo.message().find_map(size_extension);
    if let Some(credentials) = &settings.credentials {
        match credentials.method {
            AuthMethod::Password => {
                let lettre_credentials = Credentials::new(
                    credentials.username.clone(),
                    credentials.password.expose().to_owned(),
                );
                limit(
                    &addr,
                    timeout,
                    "AUTH",
                    conn.auth(&[Mechanism::Plain, Mechanism::Login], &lettre_credentials),
                )
                .await?
                .map_err(|err| auth_error(err, &addr, &credentials.username))?;
            }
            AuthMethod::Xoauth2 => auth_xoauth2(&mut conn, credentials, &addr, timeout).await?,
        }
    }
    Ok(SmtpSink {
        conn,
        pipelining,
        size_limit,
        data_open: false,
        addr,
        timeout,
        envelope_from,
    })
}

/// A failed password AUTH, told by what failed: only a 5xx refuses the
/// credentials; a 4xx is the server's trouble, and anything else is the
/// session's (a drop, no mechanism both sides know, a garbled exchange).
fn auth_error(err: lettre::transport::smtp::Error, addr: &str, user: &str) -> SinkError {
    if err.is_permanent() {
        return SinkError::Auth {
            addr: addr.to_owned(),
            user: user.to_owned(),
            message: err.to_string(),
            hint: "check username and password",
        };
    }
    let message = if err.is_transient() {
        format!("{err} (the server could not check the login just now; the next pass tries again)")
    } else if err.is_client() {
        format!(
            "{err} (deskbridge logs in with AUTH PLAIN or LOGIN, which the server must offer on this port and TLS mode)"
        )
    } else {
        err.to_string()
    };
    SinkError::Session {
        addr: addr.to_owned(),
        operation: "AUTH",
        message,
    }
}

/// What to check when a server refuses an access token.
const TOKEN_HINT: &str =
    "check that the access token is current, was issued for this user, and allows SMTP submission";

/// SASL XOAUTH2 (RFC 4954 AUTH with Google's and Microsoft's mechanism).
///
/// NOTE: Done here rather than by lettre: a server refusing a token
/// answers 334 with its reasons as base64 JSON and waits for an empty
/// line before its final 535, and lettre's XOAUTH2 cannot send that line,
/// so the reasons were lost behind a client-side error.
async fn auth_xoauth2(
    conn: &mut AsyncSmtpConnection,
    credentials: &crate::config::Credentials,
    addr: &str,
    timeout: Duration,
) -> Result<(), SinkError> {
    use base64::Engine as _;
    let refused = |message: String, hint: &'static str| SinkError::Auth {
        addr: addr.to_owned(),
        user: credentials.username.clone(),
        message,
        hint,
    };
    if !conn
        .server_info()
        .supports_auth_mechanism(Mechanism::Xoauth2)
    {
        return Err(refused(
            "the server does not offer AUTH XOAUTH2".to_owned(),
            "use auth = \"password\" with this server, or a server that takes OAuth 2.0 tokens",
        ));
    }
    let initial = base64::engine::general_purpose::STANDARD.encode(credentials.xoauth2_response());
    let reply = limit(
        addr,
        timeout,
        "AUTH",
        conn.command(Line(format!("AUTH XOAUTH2 {initial}"))),
    )
    .await?;
    match reply {
        Ok(response) if response.has_code(235) => Ok(()),
        Ok(response) if response.has_code(334) => {
            let said = response
                .first_line()
                .and_then(|text| {
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .ok()
                })
                .map(|json| String::from_utf8_lossy(&json).into_owned())
                .unwrap_or_default();
            let end = limit(addr, timeout, "AUTH", conn.command(Line(String::new()))).await?;
            let verdict = match end {
                Ok(response) => format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                ),
                Err(err) => err.to_string(),
            };
            Err(refused(
                format!("{verdict} (the server said {said})"),
                TOKEN_HINT,
            ))
        }
        Ok(response) => Err(refused(
            format!("unexpected reply {} to AUTH XOAUTH2", response.code()),
            TOKEN_HINT,
        )),
        Err(err) => Err(refused(err.to_string(), TOKEN_HINT)),
    }
}

/// One command line as given, for the exchanges lettre has no type for.
struct Line(String);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// lettre's TLS parameters with the same trust as [`tls::client_config`]:
/// system roots plus the configured CA file.
fn starttls_parameters(settings: &SmtpSettings, addr: &str) -> Result<TlsParameters, SinkError> {
    // NOTE: lettre's default store would read /etc/ssl/certs again for
    // every session; hand it the roots read once per process instead.
    let certs =
        tls::trusted_certs(settings.ca_file.as_deref()).map_err(|source| SinkError::TlsSetup {
            addr: addr.to_owned(),
            source,
        })?;
    let mut builder =
        TlsParameters::builder(settings.host.clone()).certificate_store(CertificateStore::None);
    for cert in certs {
        let cert = Certificate::from_der(cert.to_vec()).map_err(|err| SinkError::Tls {
            addr: addr.to_owned(),
            message: err.to_string(),
            hint: "ca_file holds a certificate rustls cannot use",
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|err| SinkError::Tls {
        addr: addr.to_owned(),
        message: err.to_string(),
        hint: "cannot build the TLS configuration",
    })
}

impl SmtpSink {
    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the server pipelines, so [`SmtpSink::send_then_open`] can
    /// carry the next envelope.
    pub fn pipelines(&self) -> bool {
        self.pipelining
    }

    /// The largest message the server says it takes (EHLO SIZE), if it
    /// names one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size_limit
    }

    /// Redirects one message: the trace block, then the original bytes.
    /// Returns the server's final reply (e.g. `250 2.0.0 Ok: queued as X`).
    ///
    /// # Errors
    /// [`SendError`]: temporary (4xx), permanent (5xx) or a broken session.
    pub async fn send(
        &mut self,
        forward_to: &str,
        trace: &[u8],
        original: &[u8],
    ) -> Result<String, SendError> {
        let (result, _) = self.send_then_open(forward_to, trace, original, None).await;
        result
    }

    /// Redirects one message as [`SmtpSink::send`] does and, when the server
    /// pipelines, sends the next message's MAIL, RCPT and DATA right after
    /// this message's final dot (RFC 2920 allows message content first in a
    /// group). The server then answers this message and opens the next in
    /// one round trip instead of two.
    ///
    /// # Errors
    /// As [`SmtpSink::send`], for this message; the next one's fate is the
    /// [`NextEnvelope`] beside it.
    pub async fn send_then_open(
        &mut self,
        forward_to: &str,
        trace: &[u8],
        original: &[u8],
        next: Option<NextMessage<'_>>,
    ) -> (Result<String, SendError>, NextEnvelope) {
        let sender = Some(self.envelope_from.clone());
        self.send_from(sender, forward_to, trace, original, next)
            .await
    }

    /// Sends a message deskbridge wrote itself. `null_sender` gives
    /// `MAIL FROM:<>`, as RFC 3834 asks of auto-replies.
    ///
    /// # Errors
    /// As [`SmtpSink::send`].
    pub async fn send_own(
        &mut self,
        recipient: &str,
        message: &[u8],
        null_sender: bool,
    ) -> Result<String, SendError> {
        let sender = (!null_sender).then(|| self.envelope_from.clone());
        let (result, _) = self.send_from(sender, recipient, b"", message, None).await;
        result
    }

    /// Asks whether the server takes mail from `envelope_from` (or from the
    /// null sender `<>`, which auto-replies use) and, given `forward_to`,
    /// to that address: MAIL FROM and RCPT TO, then RSET. No DATA is sent,
    /// so no message can come of it.
    ///
    /// # Errors
    /// [`SendError::Broken`]: the session broke, or the server refused RSET
    /// (its state is then unknown); drop the session. After a refusal the
    /// refusal is returned even when the RSET after it failed: the next
    /// command then finds the session broken.
    pub async fn probe_envelope(
        &mut self,
        null_sender: bool,
        forward_to: Option<&str>,
    ) -> Result<EnvelopeProbe, SendError> {
        let sender = (!null_sender).then(|| self.envelope_from.clone());
        let recipient = match forward_to.map(recipient_address).transpose() {
            Ok(recipient) => recipient,
            Err(invalid) => return Ok(EnvelopeProbe::RecipientRefused(invalid)),
        };
        let mut reply = match self
            .step("MAIL FROM", self.completion(), |conn| {
                conn.command(Mail::new(sender, Vec::new()))
            })
            .await
        {
            Ok(reply) => reply_text(&reply),
            Err(err @ SendError::Broken { .. }) => return Err(err),
            Err(refusal) => {
                let _ = self.reset_or_drop().await;
                return Ok(EnvelopeProbe::SenderRefused(refusal));
            }
        };
        if let Some(recipient) = recipient {
            match self
                .step("RCPT TO", self.completion(), |conn| {
                    conn.command(Rcpt::new(recipient, Vec::new()))
                })
                .await
            {
                Ok(accepted) => reply = reply_text(&accepted),
                Err(err @ SendError::Broken { .. }) => return Err(err),
                Err(refusal) => {
                    let _ = self.reset_or_drop().await;
                    return Ok(EnvelopeProbe::RecipientRefused(refusal));
                }
            }
        }
        self.reset_or_drop().await?;
        Ok(EnvelopeProbe::Accepted(reply))
    }

    /// RSET, where any refusal means the session can no longer be trusted.
    async fn reset_or_drop(&mut self) -> Result<(), SendError> {
        match self.reset().await {
            Ok(()) => Ok(()),
            Err(err @ SendError::Broken { .. }) => Err(err),
            Err(refusal) => Err(SendError::Broken {
                addr: self.addr.clone(),
                message: refusal.to_string(),
                content_sent: false,
            }),
        }
    }

    /// MAIL FROM and RCPT TO for one message; BODY=8BITMIME when its bytes
    /// need it and the server offers it.
    fn envelope(
        &self,
        sender: Option<Address>,
        forward_to: &str,
        trace: &[u8],
        content: &[u8],
    ) -> Result<(Mail, Rcpt), SendError> {
        let recipient = recipient_address(forward_to)?;
        let mut options = Vec::new();
        if !(trace.is_ascii() && content.is_ascii())
            && self
                .conn
                .server_info()
                .supports_feature(Extension::EightBitMime)
        {
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        Ok((Mail::new(sender, options), Rcpt::new(recipient, Vec::new())))
    }

    async fn send_from(
        &mut self,
        sender: Option<Address>,
        forward_to: &str,
        trace: &[u8],
        original: &[u8],
        next: Option<NextMessage<'_>>,
    ) -> (Result<String, SendError>, NextEnvelope) {
        let content = crlf_lines(original);
        if self.data_open {
            // The envelope went out with the previous message and got 354.
            self.data_open = false;
        } else if let Err(err) = self
            .open_data(sender.clone(), forward_to, trace, &content)
            .await
        {
            return (Err(err), NextEnvelope::NotSent);
        }
        // NOTE: Allow the transfer itself time in proportion to its size
        // (at least 1 MiB/s), and the reply after the final dot the 10
        // minutes RFC 5321 §4.5.3.2.6 gives it: a content filter may take
        // that long, and giving up early sends the message again.
        let transfer = self.timeout.max(DATA_END_TIMEOUT)
            + Duration::from_secs(content.len() as u64 / (1024 * 1024));
        let payload = (content.len() <= ONE_WRITE_MAX)
            .then(|| DataPayload::new(trace, &content))
            .flatten();
        let (response, next_sent) = match payload {
            // NOTE: The whole payload, dot-stuffed and terminated, goes out
            // in one write: lettre's own path copies it byte by byte and
            // writes trace, body and terminator separately, which costs
            // more CPU than the rest of a redirect. lettre writes a
            // command's text as it is, which is all DATA content needs.
            Some(mut payload) => {
                let next_commands = next
                    .filter(|_| self.pipelining)
                    .and_then(|next| self.next_envelope_text(sender, next));
                let next_sent = next_commands.is_some();
                if let Some(commands) = next_commands {
                    payload.0.push_str(&commands);
                }
                let response = self
                    .step(CONTENT, (transfer, Severity::PositiveCompletion), |conn| {
                        conn.command(payload)
                    })
                    .await;
                (response, next_sent)
            }
            // Large content, or 8-bit content that is not UTF-8: lettre's
            // byte path, which holds one copy of the message instead of two.
            None => {
                let body = without_final_crlf(content);
                let response = self
                    .step(CONTENT, (transfer, Severity::PositiveCompletion), |conn| {
                        conn.message_iter([trace, body.as_ref()].into_iter())
                    })
                    .await;
                (response, false)
            }
        };
        let result = response.map(|response| reply_text(&response));
        if !next_sent {
            return (result, NextEnvelope::NotSent);
        }
        if matches!(result, Err(SendError::Broken { .. })) {
            return (result, NextEnvelope::Lost);
        }
        let mail = self
            .step("MAIL FROM", self.completion(), |conn| conn.read_response())
            .await;
        let next = match self.envelope_replies(mail).await {
            Ok(()) => {
                self.data_open = true;
                NextEnvelope::Open
            }
            Err(SendError::Broken { .. }) => NextEnvelope::Lost,
            Err(err) => NextEnvelope::Refused(err),
        };
        (result, next)
    }

    /// MAIL, RCPT and DATA for one message, up to the server's 354.
    async fn open_data(
        &mut self,
        sender: Option<Address>,
        forward_to: &str,
        trace: &[u8],
        content: &[u8],
    ) -> Result<(), SendError> {
        let (mail, rcpt) = self.envelope(sender, forward_to, trace, content)?;
        if self.pipelining {
            let commands = format!("{mail}{rcpt}{Data}");
            let mail = self
                .step("MAIL FROM", self.completion(), |conn| {
                    conn.command(commands)
                })
                .await;
            self.envelope_replies(mail).await
        } else {
            self.step("MAIL FROM", self.completion(), |conn| conn.command(mail))
                .await?;
            self.step("RCPT TO", self.completion(), |conn| conn.command(rcpt))
                .await?;
            self.step("DATA", self.start_data(), |conn| conn.command(Data))
                .await?;
            Ok(())
        }
    }

    /// The next message's envelope as pipelined text, or `None` when it
    /// cannot be written (an invalid recipient fails on its own send).
    fn next_envelope_text(&self, sender: Option<Address>, next: NextMessage<'_>) -> Option<String> {
        // NOTE: The original bytes, not their CRLF form: the envelope only
        // asks whether they are ASCII, which CRLF conversion never changes.
        let (mail, rcpt) = self
            .envelope(sender, next.forward_to, next.trace, next.original)
            .ok()?;
        Some(format!("{mail}{rcpt}{Data}"))
    }

    /// The replies to a pipelined MAIL, RCPT and DATA, given MAIL's: one
    /// round trip for all three (RFC 2920).
    async fn envelope_replies(
        &mut self,
        mail: Result<lettre::transport::smtp::response::Response, SendError>,
    ) -> Result<(), SendError> {
        if let Err(err @ SendError::Broken { .. }) = mail {
            return Err(err);
        }
        let rcpt = self
            .step("RCPT TO", self.completion(), |conn| conn.read_response())
            .await;
        if let Err(err @ SendError::Broken { .. }) = rcpt {
            return Err(err);
        }
        let data = self
            .step("DATA", self.start_data(), |conn| conn.read_response())
            .await;
        match (mail, rcpt, data) {
            (Ok(_), Ok(_), Ok(_)) => Ok(()),
            // A server that opened DATA after refusing the envelope is out of
            // step with us: drop the session rather than send anything.
            (Err(_), _, Ok(_)) | (_, Err(_), Ok(_)) => Err(SendError::Broken {
                addr: self.addr.clone(),
                message: "the server accepted DATA after refusing the envelope".to_owned(),
                content_sent: false,
            }),
            (Err(err), _, Err(_)) | (Ok(_), Err(err), Err(_)) | (Ok(_), Ok(_), Err(err)) => {
                Err(err)
            }
        }
    }

    /// Runs one SMTP step; turns negative replies into [`SendError`] and
    /// resets the transaction so the session can carry the next message.
    async fn step<'a, F, Fut>(
        &'a mut self,
        operation: &'static str,
        (timeout, expected): (Duration, Severity),
        action: F,
    ) -> Result<lettre::transport::smtp::response::Response, SendError>
    where
        F: FnOnce(&'a mut AsyncSmtpConnection) -> Fut,
        Fut: Future<
                Output = Result<
                    lettre::transport::smtp::response::Response,
                    lettre::transport::smtp::Error,
                >,
            > + 'a,
    {
        let addr = self.addr.clone();
        let content_sent = operation == CONTENT;
        let outcome = tokio::time::timeout(timeout, action(&mut self.conn)).await;
        let result = match outcome {
            Err(_) => {
                return Err(SendError::Broken {
                    addr,
                    message: format!("no answer within {} s to {operation}", timeout.as_secs()),
                    content_sent,
                });
            }
            Ok(result) => result,
        };
        match result {
            // NOTE: lettre counts any 2xx or 3xx as success. A 354 to the
            // content, or a 250 to DATA, means the replies no longer line
            // up with the commands: only a dropped session is safe then.
            Ok(response) if response.code().severity != expected => Err(SendError::Broken {
                addr,
                message: format!(
                    "{operation}: unexpected reply {} (out of step with the server)",
                    response.code()
                ),
                content_sent,
            }),
            Ok(response) => Ok(response),
            Err(err) => {
                let reply = format!("{operation}: {err}");
                if err.is_transient() {
                    Err(SendError::Temporary { reply })
                } else if err.is_permanent() && content_sent {
                    Err(SendError::Permanent { reply })
                } else if err.is_permanent() {
                    Err(SendError::EnvelopeRefused { reply })
                } else {
                    Err(SendError::Broken {
                        addr,
                        message: reply,
                        content_sent,
                    })
                }
            }
        }
    }

    /// A command's timeout, and the 2xx it must get.
    fn completion(&self) -> (Duration, Severity) {
        (self.timeout, Severity::PositiveCompletion)
    }

    /// DATA's timeout, and the 354 it must get.
    fn start_data(&self) -> (Duration, Severity) {
        (self.timeout, Severity::PositiveIntermediate)
    }

    /// Resets the SMTP transaction after a 4xx/5xx reply. Sends nothing
    /// while the server waits for the next message's content: RSET would
    /// become content, and the refused reply was to content, which ends its
    /// transaction anyway.
    ///
    /// # Errors
    /// The session broke; the caller should drop it.
    pub async fn reset(&mut self) -> Result<(), SendError> {
        if self.data_open {
            return Ok(());
        }
        self.step("RSET", self.completion(), |conn| conn.command(Rset))
            .await
            .map(|_| ())
    }

    /// Ends the session politely; failures here change nothing.
    pub async fn quit(mut self) {
        // NOTE: With DATA open, QUIT would become message content; closing
        // the connection makes the server drop the unfinished message.
        if self.data_open {
            return;
        }
        let _ = tokio::time::timeout(self.timeout, self.conn.quit()).await;
    }
}

/// The step that sends a message's content and reads the reply to it.
const CONTENT: &str = "message content";

/// How long the reply after a message's final dot may take (RFC 5321
/// §4.5.3.2.6), unless `timeout_secs` is longer.
const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// `forward_to` as an SMTP address; one that is not is refused like a 5xx.
fn recipient_address(forward_to: &str) -> Result<Address, SendError> {
    Address::from_str(forward_to).map_err(|err| SendError::Permanent {
        reply: format!("invalid recipient {forward_to}: {err}"),
    })
}

/// The limit in an EHLO line `SIZE 10240000`; `SIZE` alone or `SIZE 0`
/// names none.
fn size_extension(line: &str) -> Option<u64> {
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("SIZE") {
        return None;
    }
    words.next()?.parse().ok().filter(|&limit| 0 < limit)
}

/// A reply as one line: `250 2.0.0 Ok: queued as X`.
fn reply_text(response: &lettre::transport::smtp::response::Response) -> String {
    format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    )
    .trim()
    .to_owned()
}

/// Bare LF line ends become CRLF (SMTP and IMAP both mandate CRLF; Postfix
/// may reject bare LF). Borrows when nothing needs to change, which is the
/// case for all IMAP-fetched mail.
fn crlf_lines(original: &[u8]) -> Cow<'_, [u8]> {
    let has_bare_lf = memchr::memchr_iter(b'\n', original)
        .any(|index| index == 0 || original[index - 1] != b'\r');
    if has_bare_lf {
        let mut fixed = Vec::with_capacity(original.len() + original.len() / 32);
        for (index, byte) in original.iter().enumerate() {
            if *byte == b'\n' && (index == 0 || original[index - 1] != b'\r') {
                fixed.push(b'\r');
            }
            fixed.push(*byte);
        }
        Cow::Owned(fixed)
    } else {
        Cow::Borrowed(original)
    }
}

/// What lettre's path sends: it always ends the content with CRLF.CRLF,
/// so one final CRLF of the original is dropped.
fn without_final_crlf(mut body: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if body.ends_with(b"\r\n") {
        body = match body {
            Cow::Borrowed(bytes) => Cow::Borrowed(&bytes[..bytes.len() - 2]),
            Cow::Owned(mut bytes) => {
                bytes.truncate(bytes.len() - 2);
                Cow::Owned(bytes)
            }
        };
    }
    body
}

/// Messages up to this size go out in one write ([`DataPayload`]); the
/// payload and lettre's copy of it are two copies, which only small
/// messages can have for free.
const ONE_WRITE_MAX: usize = 1024 * 1024;

/// DATA content as SMTP carries it: the trace block and the body with
/// every line that starts with "." doubled (RFC 5321 4.5.2), then the
/// terminator: "." on a line of its own, after a CRLF added only when the
/// content does not already end with one (so an empty body stays empty).
struct DataPayload(String);

impl DataPayload {
    /// `None` when the content is not UTF-8 (it cannot travel as text).
    /// `body` is [`crlf_lines`]'s output.
    fn new(trace: &[u8], body: &[u8]) -> Option<DataPayload> {
        let trace = std::str::from_utf8(trace).ok()?;
        let body = std::str::from_utf8(body).ok()?;
        let mut text = String::with_capacity(trace.len() + body.len() + 64);
        for part in [trace, body] {
            let mut rest = part;
            // Each part starts a line: the trace block ends with CRLF.
            if rest.starts_with('.') {
                text.push('.');
            }
            while let Some(at) = memchr::memmem::find(rest.as_bytes(), b"\n.") {
                text.push_str(&rest[..=at]);
                text.push('.');
                rest = &rest[at + 1..];
            }
            text.push_str(rest);
        }
        if !(text.is_empty() || text.ends_with("\r\n")) {
            text.push_str("\r\n");
        }
        text.push_str(".\r\n");
        Some(DataPayload(text))
    }
}

impl std::fmt::Display for DataPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs one connection step under the timeout.
async fn limit<T>(
    addr: &str,
    timeout: Duration,
    operation: &'static str,
    step: impl Future<Output = T>,
) -> Result<T, SinkError> {
    tokio::time::timeout(timeout, step)
        .await
        .map_err(|_| SinkError::TimedOut {
            addr: addr.to_owned(),
            operation,
            secs: timeout.as_secs(),
        })
}

/// The SMTP connection's socket. Every read first asks the kernel to
/// acknowledge at once what arrives (`TCP_QUICKACK`).
///
/// NOTE: A pipelining server may answer one group of commands in two
/// writes (Postfix does when the group spans its read buffer). With Nagle
/// on the server's socket, the second write waits until the first is
/// acknowledged, and a delayed ACK holds that for ~40 ms. Linux drops
/// quick-ACK mode again on its own, so it is set before every read.
///
/// Before STARTTLS completes, reads stop at the end of each line (the
/// second field): lettre reads through a buffer it keeps across the switch
/// to TLS, so bytes a man in the middle appends to a plaintext reply would
/// otherwise be read later as the server's replies inside TLS. Left in the
/// socket, they break the TLS handshake instead.
#[derive(Debug)]
struct SmtpTcp(TcpStream, Arc<AtomicBool>);

impl SmtpTcp {
    /// A plain stream, read line by line until `plaintext` is cleared.
    fn new(stream: TcpStream, plaintext: &Arc<AtomicBool>) -> SmtpTcp {
        SmtpTcp(stream, Arc::clone(plaintext))
    }
}

impl AsyncRead for SmtpTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let SmtpTcp(stream, plaintext) = self.get_mut();
        #[cfg(target_os = "linux")]
        {
            // A failure only costs speed.
            let _ = stream.set_quickack(true);
        }
        if !plaintext.load(Ordering::Relaxed) {
            return Pin::new(stream).poll_read(cx, buf);
        }
        let mut line = [0u8; 1024];
        let mut peeked = ReadBuf::new(&mut line);
        let available = match stream.poll_peek(cx, &mut peeked) {
            Poll::Ready(Ok(count)) => count,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => return Poll::Pending,
        };
        let through_line_end = peeked.filled()[..available]
            .iter()
            .position(|byte| *byte == b'\n')
            .map_or(available, |at| at + 1)
            .min(buf.remaining());
        let mut exact = ReadBuf::new(&mut line[..through_line_end]);
        match Pin::new(stream).poll_read(cx, &mut exact) {
            Poll::Ready(Ok(())) => {
                buf.put_slice(exact.filled());
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Writes go straight to the wrapped stream (field `.0`): the wrappers
/// below change only how they read or what lettre sees.
macro_rules! write_through {
    ($wrapper:ty) => {
        impl AsyncWrite for $wrapper {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.get_mut().0).poll_flush(cx)
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
            }
        }
    };
}

write_through!(SmtpTcp);

impl AsyncTokioStream for SmtpTcp {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

/// A TLS stream lettre can carry, so implicit TLS uses the same rustls
/// configuration as IMAP and the greeting is read over TLS.
#[derive(Debug)]
struct ImplicitTls(TlsStream<SmtpTcp>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

write_through!(ImplicitTls);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().0.0.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(original: &[u8]) -> Cow<'_, [u8]> {
        without_final_crlf(crlf_lines(original))
    }

    #[test]
    fn size_extension_reads_a_limit_and_ignores_the_rest() {
        assert_eq!(size_extension("SIZE 10240000"), Some(10_240_000));
        assert_eq!(size_extension("size  35882577 "), Some(35_882_577));
        assert_eq!(size_extension("SIZE"), None, "SIZE alone names no limit");
        assert_eq!(size_extension("SIZE 0"), None, "RFC 1870: 0 means none");
        assert_eq!(size_extension("SIZE lots"), None);
        assert_eq!(size_extension("SIZEX 10"), None);
        assert_eq!(size_extension("8BITMIME"), None);
    }

    #[test]
    fn crlf_mail_is_borrowed_and_loses_only_the_final_crlf() {
        let original = b"Subject: x\r\n\r\nline\r\n";
        let body = wire(original);
        assert!(matches!(body, Cow::Borrowed(_)));
        assert_eq!(body.as_ref(), b"Subject: x\r\n\r\nline");
    }

    #[test]
    fn data_payload_doubles_leading_dots_and_terminates() {
        let payload = |trace: &[u8], body: &[u8]| {
            DataPayload::new(trace, body).map(|payload| payload.to_string())
        };
        assert_eq!(
            payload(b"Received: x\r\n", b".first\r\nmid.dle\r\n..two\r\n.\r\n").as_deref(),
            Some("Received: x\r\n..first\r\nmid.dle\r\n...two\r\n..\r\n.\r\n")
        );
        assert_eq!(
            payload(b"Received: x\r\n", b"no final line end").as_deref(),
            Some("Received: x\r\nno final line end\r\n.\r\n"),
            "a CRLF before the terminator only when the content lacks one"
        );
        assert_eq!(
            payload(b"Received: x\r\n", b"").as_deref(),
            Some("Received: x\r\n.\r\n"),
            "an empty original adds no blank line"
        );
        assert!(
            DataPayload::new(b"", b"caf\xe9").is_none(),
            "latin-1 takes lettre's byte path"
        );
    }

    #[test]
    fn bare_lf_becomes_crlf() {
        assert_eq!(wire(b"a\nb\r\nc\n").as_ref(), b"a\r\nb\r\nc");
        assert_eq!(wire(b"no newline").as_ref(), b"no newline");
    }
}
