//! The one TLS client policy shared by IMAP and SMTP.
//!
//! Owns trust: the system's root certificates plus an optional CA file from
//! the config. Verification is always on; nothing here can turn it off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Errors building the trust store.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("CA file {path} holds no PEM certificate")]
    EmptyCaFile { path: PathBuf },
    #[error("no trusted root certificates: the system store is empty and no ca_file is set")]
    NoRoots,
}

/// Reads the PEM certificates of a CA file.
///
/// # Errors
/// An unreadable file, bad PEM, or a file without any certificate.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| TlsSetupError::CaFile {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::EmptyCaFile {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The system's root certificates that rustls can use, read once per
/// process.
///
/// Reading and decoding the ~150 files of `/etc/ssl/certs` takes several
/// milliseconds, and a pass opens a TLS session per mailbox and per SMTP
/// session: on an idle poll that was a large part of the run. Unreadable
/// or unusable certificates are skipped, as every TLS client does; an empty
/// store is reported by the callers.
pub fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .filter(|cert| usable_root(cert).is_ok())
            .collect()
    })
}

/// Whether rustls can use a certificate as a trust anchor.
fn usable_root(cert: &CertificateDer<'static>) -> Result<(), rustls::Error> {
    rustls::RootCertStore::empty().add(cert.clone())
}

/// Every certificate a TLS client here trusts: the system roots plus those
/// of `ca_file`. IMAP (through [`client_config`]) and lettre's STARTTLS
/// both build their trust from this, so they trust the same and report a
/// bad CA file alike.
///
/// # Errors
/// A bad CA file, or no roots at all.
pub fn trusted_certs(
    ca_file: Option<&Path>,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let mut certs = system_roots().to_vec();
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            usable_root(&cert).map_err(|err| TlsSetupError::CaFile {
                path: path.to_path_buf(),
                message: err.to_string(),
            })?;
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    Ok(certs)
}

/// A rustls client config trusting the system roots and `ca_file`.
///
/// # Errors
/// A bad CA file, or no roots at all.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(trusted_certs(ca_file)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsSetupError::CaFile {
            path: PathBuf::from("<rustls>"),
            message: err.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Describes a TLS failure so a user knows what to check. rustls reports
/// certificate problems as `invalid peer certificate: ...`.
pub fn explain(err: &dyn std::error::Error) -> &'static str {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
        "the server's certificate is not signed by a trusted CA: set ca_file to the CA that issued it"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        "the server's certificate does not name this host: use the host name the certificate was issued for"
    } else if text.contains("Expired") || text.contains("expired") {
        "the server's certificate has expired"
    } else {
        "check the host, port and tls mode"
    }
}
