//! Opening a normal (SQL) session with tokio-postgres the way libpq would:
//! each host in order, `sslmode` honoured with rustls (ring provider, chosen
//! explicitly), client certificates, and failures classified into
//! [`ConnectError`] so callers can tell a wrong password from a server that
//! is down.
//!
//! Owns: the TLS configuration of SQL sessions and the classification of
//! connection failures. Must never: parse connection strings (that is
//! `conninfo`), retry on its own (callers decide with
//! [`ConnectError::is_retryable`]), or log a password.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode as TpSslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::{ConnInfo, SslMode, SslRootCert, Target};

/// Why a session could not be opened. Each message is one line that says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered: connection refused, no route, unknown host, timeout.
    #[error("{}", unreachable_message(target, error))]
    Unreachable { target: Target, error: io::Error },
    /// The server refused the credentials (SQLSTATE 28P01 / 28000), or asked
    /// for a password that was not given.
    #[error("{message} (hint: {hint})")]
    Auth {
        user: String,
        message: String,
        hint: String,
    },
    /// SQLSTATE 3D000.
    #[error("database \"{dbname}\" does not exist (hint: create it, or name another with dbname= or PGDATABASE)")]
    DatabaseMissing { dbname: String },
    /// The TLS negotiation or handshake failed (certificate not trusted,
    /// wrong name, server without TLS under sslmode=require or stronger).
    #[error("tls connection to server at {target} failed: {message} (hint: {hint})")]
    Tls {
        target: Target,
        message: String,
        hint: &'static str,
    },
    /// A local certificate, key or CRL file could not be used.
    #[error("could not use {keyword} file \"{}\": {problem}", path.display())]
    CertFile {
        keyword: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// TLS settings that cannot be combined or that rustls refuses.
    #[error("invalid tls settings: {message}")]
    TlsSettings { message: String },
    /// Any other error the server sent during startup.
    #[error("server at {target} rejected the connection: {message} (sqlstate {})", code.code())]
    Server {
        target: Target,
        code: SqlState,
        message: String,
    },
    /// The connection broke during startup.
    #[error("connection to server at {target} was lost during startup: {message} (hint: check the server log; it may be shutting down or restarting)")]
    ConnectionLost { target: Target, message: String },
    /// The peer answered with something that is not the PostgreSQL protocol.
    #[error("unexpected answer from server at {target}: {message} (hint: check that host and port point at PostgreSQL)")]
    Protocol { target: Target, message: String },
    /// A libpq setting that changes security and that pgtide cannot honour.
    #[error("connection option {keyword}={value} is not supported (hint: remove it from the connection string or the environment)")]
    Unsupported {
        keyword: &'static str,
        value: String,
    },
    /// The connection parameters are unusable (e.g. no host at all).
    #[error("invalid connection settings: {message}")]
    Settings { message: String },
}

impl ConnectError {
    /// True when trying again later may succeed without anyone changing
    /// anything: the server is down, restarting, starting up or full.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::Unreachable { .. } | ConnectError::ConnectionLost { .. } => true,
            ConnectError::Server { code, .. } => {
                *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::TOO_MANY_CONNECTIONS
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::INSUFFICIENT_RESOURCES
                    || code.code().starts_with("08")
            }
            _ => false,
        }
    }

    /// libpq moves on to the next host only when this one cannot be reached
    /// or says it cannot accept connections yet (57P03); any other answer is
    /// final.
    fn tries_next_host(&self) -> bool {
        match self {
            ConnectError::Unreachable { .. } => true,
            ConnectError::Server { code, .. } => *code == SqlState::CANNOT_CONNECT_NOW,
            _ => false,
        }
    }
}

fn unreachable_message(target: &Target, error: &io::Error) -> String {
    let reason = io_reason(error);
    if target.is_unix_socket() {
        return format!(
            "could not connect to server on socket \"{target}\": {reason} \
             (is the server running locally and accepting connections on that socket?)"
        );
    }
    let hint = if reason.contains("lookup") || reason.contains("resolve") {
        "(is the host name right?)"
    } else {
        "(is the server running and accepting TCP connections?)"
    };
    format!("could not connect to server at {target}: {reason} {hint}")
}

/// "Connection refused (os error 111)" → "connection refused".
fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    lowercase_first(text)
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Opens a session on the first host (of `ci.targets()`) that accepts it, and
/// spawns its connection task on tokio. `application_name` is used unless
/// `ci` names one (libpq's `fallback_application_name`).
///
/// TLS follows `sslmode` (unix sockets never use TLS, as in libpq): disable →
/// none; allow and prefer → TLS without certificate checks if the server
/// offers it; require → TLS without certificate checks, unless a root
/// certificate is given (sslrootcert or `~/.postgresql/root.crt`), then as
/// verify-ca; verify-ca → chain checked against sslrootcert (else
/// `~/.postgresql/root.crt`, else the system roots); verify-full → chain and
/// host name. `sslcert`/`sslkey` (else `~/.postgresql/postgresql.{crt,key}`
/// if both exist) are sent as the client certificate; `sslcrl` is honoured.
pub async fn connect(ci: &ConnInfo, application_name: &str) -> Result<Client, ConnectError> {
    check_supported(ci)?;
    let targets = ci.targets();
    if targets.is_empty() {
        return Err(ConnectError::Settings {
            message: "no host to connect to (hint: set host= or PGHOST)".to_owned(),
        });
    }
    let sslmode = ci.sslmode.unwrap_or(SslMode::Prefer);
    let tls = if sslmode != SslMode::Disable && targets.iter().any(|t| !t.is_unix_socket()) {
        Some(tls_connector(ci, sslmode)?)
    } else {
        None
    };

    for (i, target) in targets.iter().enumerate() {
        let mut config = ci.tokio_config_for(target);
        if ci.application_name.is_none() {
            config.application_name(application_name);
        }
        let result = match &tls {
            Some(tls) if !target.is_unix_socket() => {
                config
                    .connect(tls.clone())
                    .await
                    .map(|(client, connection)| {
                        spawn_connection(connection, target.clone());
                        client
                    })
            }
            _ => {
                config.ssl_mode(TpSslMode::Disable);
                config.connect(NoTls).await.map(|(client, connection)| {
                    spawn_connection(connection, target.clone());
                    client
                })
            }
        };
        match result {
            Ok(client) => {
                tracing::debug!(server = %target, "connected");
                return Ok(client);
            }
            Err(e) => {
                let error = classify(e, target, ci);
                if !error.tries_next_host() || i + 1 == targets.len() {
                    return Err(error);
                }
                // Not a failure yet: the caller gets the last host's error.
                tracing::debug!(server = %target, error = %error, "trying the next host");
            }
        }
    }
    // Not reached: the loop returns on the last target.
    Err(ConnectError::Settings {
        message: "no host to connect to".to_owned(),
    })
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>, target: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            // The session's owner sees only "connection closed"; this is
            // where the cause is recorded.
            tracing::warn!(server = %target, error = %error_chain(&e), "postgres connection failed");
        }
    });
}

/// "db error: FATAL: …" style text: an error and its sources, `: `-joined.
fn error_chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Security-relevant libpq settings that tokio-postgres cannot honour are
/// refused rather than silently ignored.
pub(crate) fn check_supported(ci: &ConnInfo) -> Result<(), ConnectError> {
    let refuse = |keyword: &'static str, bad: &dyn Fn(&str) -> bool| match ci.other.get(keyword) {
        Some(value) if bad(value) => Err(ConnectError::Unsupported {
            keyword,
            value: value.clone(),
        }),
        _ => Ok(()),
    };
    refuse("gssencmode", &|v| v == "require")?;
    refuse("sslcertmode", &|v| v == "require")?;
    refuse("require_auth", &|_| true)?;
    refuse("requirepeer", &|_| true)?;
    refuse("sslcrldir", &|_| true)?;
    refuse("sslpassword", &|_| true)?;
    Ok(())
}

/// Maps a tokio-postgres startup error to a [`ConnectError`]. tokio-postgres
/// does not expose its error kinds, so the kind is read from its (fixed)
/// top-level message; the server's own errors are classified by SQLSTATE.
fn classify(e: tokio_postgres::Error, target: &Target, ci: &ConnInfo) -> ConnectError {
    let user = ci.user.clone().unwrap_or_default();
    if let Some(db) = e.as_db_error() {
        let code = db.code().clone();
        let message = db.message().to_owned();
        return if code == SqlState::INVALID_PASSWORD {
            let hint = match ci.password_file_used() {
                Some(file) => format!(
                    "the password came from \"{}\"; check the line for user \"{user}\" there",
                    file.display()
                ),
                None => format!(
                    "check the password for user \"{user}\" in the connection string, PGPASSWORD or ~/.pgpass"
                ),
            };
            ConnectError::Auth {
                user,
                message,
                hint,
            }
        } else if code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            ConnectError::Auth {
                user,
                message,
                hint:
                    "check the user name, and that the server's pg_hba.conf allows this connection"
                        .to_owned(),
            }
        } else if code == SqlState::INVALID_CATALOG_NAME {
            ConnectError::DatabaseMissing {
                dbname: ci.dbname.clone().unwrap_or_default(),
            }
        } else {
            ConnectError::Server {
                target: target.clone(),
                code,
                message,
            }
        };
    }

    let kind = e.to_string();
    let source = e.into_source();
    let detail = source
        .as_deref()
        .map(|s| error_chain(s))
        .unwrap_or_else(|| kind.clone());
    match kind.as_str() {
        "error connecting to server" | "timeout waiting for server" => {
            let error = match source.map(|s| s.downcast::<io::Error>()) {
                Some(Ok(io)) => *io,
                _ => io::Error::new(io::ErrorKind::TimedOut, "timed out"),
            };
            ConnectError::Unreachable {
                target: target.clone(),
                error,
            }
        }
        "error performing TLS handshake" => tls_error(target, &detail, source.as_deref()),
        "invalid configuration" if detail == "password missing" => ConnectError::Auth {
            message: format!("no password supplied for user \"{user}\""),
            hint: "the server asks for a password: set PGPASSWORD, add a line to ~/.pgpass, or put it in the connection string".to_owned(),
            user,
        },
        "invalid configuration" => ConnectError::Settings { message: detail },
        "authentication error" => ConnectError::Auth {
            message: format!("authentication failed for user \"{user}\": {detail}"),
            hint: "check the server's authentication method in pg_hba.conf, and channel_binding".to_owned(),
            user,
        },
        "error communicating with the server" | "connection closed" => {
            ConnectError::ConnectionLost {
                target: target.clone(),
                message: lowercase_first(&detail),
            }
        }
        _ => ConnectError::Protocol {
            target: target.clone(),
            message: format!("{kind}: {detail}"),
        },
    }
}

/// Also used by the replication client for its own TLS handshakes.
pub(crate) fn tls_error(
    target: &Target,
    detail: &str,
    source: Option<&(dyn StdError + Send + Sync + 'static)>,
) -> ConnectError {
    let rustls_error = source
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let hint = match rustls_error {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => "connect with a host name the server certificate is valid for, or use sslmode=verify-ca",
        Some(rustls::Error::InvalidCertificate(_)) => {
            "give the CA that signed the server certificate in sslrootcert (sslmode=require without a root certificate encrypts without verifying)"
        }
        Some(_) => "check the server's ssl settings and ssl_min_protocol_version",
        None if detail.contains("does not support TLS") => {
            "turn ssl on in the server, or use sslmode=prefer or disable"
        }
        None => "check the server's ssl settings",
    };
    ConnectError::Tls {
        target: target.clone(),
        message: lowercase_first(detail),
        hint,
    }
}

/// The rustls client configuration for `sslmode`, with ring as the provider.
/// Also used by the replication client (`pg::wire`), so both kinds of
/// connection check certificates the same way.
pub(crate) fn tls_connector(
    ci: &ConnInfo,
    sslmode: SslMode,
) -> Result<MakeRustlsConnect, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    // libpq's default files under ~/.postgresql, used when they exist.
    let default_file = |name: &str| {
        home.as_ref()
            .map(|h| h.join(".postgresql").join(name))
            .filter(|p| p.is_file())
    };
    let rootcert = match &ci.sslrootcert {
        Some(r) => Some(r.clone()),
        None => default_file("root.crt").map(SslRootCert::File),
    };
    let (check_chain, check_name) = match sslmode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => (false, false),
        // libpq: require with a root certificate behaves as verify-ca.
        SslMode::Require => (rootcert.is_some(), false),
        SslMode::VerifyCa => (true, false),
        SslMode::VerifyFull => (true, true),
    };

    let verifier: Arc<dyn ServerCertVerifier> = if check_chain {
        let roots = load_roots(rootcert.as_ref())?;
        let crls = match ci.other.get("sslcrl") {
            Some(path) => load_crls(Path::new(path))?,
            None => Vec::new(),
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls)
            .build()
            .map_err(|e| ConnectError::TlsSettings {
                message: format!("could not build the certificate verifier: {e}"),
            })?;
        if check_name {
            webpki
        } else {
            Arc::new(ChainOnly { inner: webpki })
        }
    } else {
        Arc::new(NoCertificateCheck {
            algorithms: provider.signature_verification_algorithms,
        })
    };

    let versions = protocol_versions(ci)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| ConnectError::TlsSettings {
            message: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);

    let client_cert = match (&ci.sslcert, &ci.sslkey) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConnectError::TlsSettings {
                message: "sslcert and sslkey must be given together".to_owned(),
            })
        }
        (None, None) => default_file("postgresql.crt").zip(default_file("postgresql.key")),
    };
    let mut config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs("sslcert", &cert)?, load_key(&key)?)
            .map_err(|e| ConnectError::CertFile {
                keyword: "sslkey",
                path: key.clone(),
                problem: format!("does not match sslcert: {e}"),
            })?,
        None => builder.with_no_client_auth(),
    };
    // PostgreSQL 17+ checks the ALPN protocol; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

/// TLS versions allowed by ssl_min_protocol_version (libpq's default
/// TLSv1.2) and ssl_max_protocol_version; rustls has only 1.2 and 1.3.
fn protocol_versions(
    ci: &ConnInfo,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, ConnectError> {
    let rank = |v: &str| match v {
        "TLSv1" => 10,
        "TLSv1.1" => 11,
        "TLSv1.2" => 12,
        _ => 13,
    };
    let min = ci
        .other
        .get("ssl_min_protocol_version")
        .map_or(12, |v| rank(v));
    let max = ci
        .other
        .get("ssl_max_protocol_version")
        .map_or(13, |v| rank(v));
    let mut versions = Vec::new();
    if min <= 13 && max >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    if min <= 12 && max >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if versions.is_empty() {
        return Err(ConnectError::TlsSettings {
            message: "ssl_min_protocol_version / ssl_max_protocol_version leave no TLS version pgtide supports (TLSv1.2, TLSv1.3)".to_owned(),
        });
    }
    Ok(versions)
}

fn read_file(keyword: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|e| ConnectError::CertFile {
        keyword,
        path: path.to_owned(),
        problem: io_reason(&e),
    })
}

fn load_certs(
    keyword: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let pem = read_file(keyword, path)?;
    let bad = |problem: String| ConnectError::CertFile {
        keyword,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConnectError> {
    let pem = read_file("sslkey", path)?;
    let bad = |problem: String| ConnectError::CertFile {
        keyword: "sslkey",
        path: path.to_owned(),
        problem,
    };
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(PemError::NoItemsFound) => Err(bad(
            "no unencrypted PEM private key in it (encrypted keys are not supported)".to_owned(),
        )),
        Err(e) => Err(bad(format!("not a PEM key file: {e}"))),
    }
}

fn load_crls(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, ConnectError> {
    let pem = read_file("sslcrl", path)?;
    rustls::pki_types::CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectError::CertFile {
            keyword: "sslcrl",
            path: path.to_owned(),
            problem: format!("not a PEM CRL file: {e}"),
        })
}

fn load_roots(rootcert: Option<&SslRootCert>) -> Result<RootCertStore, ConnectError> {
    let mut roots = RootCertStore::empty();
    match rootcert {
        Some(SslRootCert::File(path)) => {
            let certs = load_certs("sslrootcert", path)?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ConnectError::CertFile {
                    keyword: "sslrootcert",
                    path: path.clone(),
                    problem: "no usable CA certificate in it".to_owned(),
                });
            }
        }
        Some(SslRootCert::System) | None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(ConnectError::TlsSettings {
                    message: "no trusted root certificates found on this system (hint: give the CA file in sslrootcert)".to_owned(),
                });
            }
        }
    }
    Ok(roots)
}

/// sslmode=allow/prefer/require: encrypt, but accept any server
/// certificate. The handshake signatures are still checked, so the peer must
/// hold the key of the certificate it shows.
#[derive(Debug)]
struct NoCertificateCheck {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// sslmode=verify-ca: the full WebPKI check (chain, validity, CRLs) except
/// the host name. rustls checks the name last, after the chain, so a
/// name-only failure means everything else passed.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with its key (PKCS#8 and SEC1), made with
    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1`.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASmgAwIBAgIUbk1uwRgBCu1QRdQ7wuC8cE2IqVowCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLcGd0aWRlLXRlc3QwIBcNMjYxMjA2MTQwMzQzWhgPMjEyNjEx
MTIxNDAzNDNaMBYxFDASBgNVBAMMC3BndGlkZS10ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEkbzj958x+KJcGtwHMk+BrjD+bDShc2Pxpx9UhdFYlLguegUm
s/ehSVbc08FDCVwrKzeXhJGQRvkw8DpZoLS6PqNTMFEwHQYDVR0OBBYEFJGbk80f
5aoO7FaGmiuvqFrxfzSsMB8GA1UdIwQYMBaAFJGbk80f5aoO7FaGmiuvqFrxfzSs
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgCqkNLKpBchxfAZQm
XxgPkimTud/F+DlTHoQTMC65ApQCIHZ8xPldAIbNAgpgMAD7hepPdcp/ELN2HE49
HeJ28U1n
-----END CERTIFICATE-----";
    const KEY_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgedGZePJjwCdaERb2
xcRC91pEpcHQjEM0CIb60eTo9PShRANCAASRvOP3nzH4olwa3AcyT4GuMP5sNKFz
Y/GnH1SF0ViUuC56BSaz96FJVtzTwUMJXCsrN5eEkZBG+TDwOlmgtLo+
-----END PRIVATE KEY-----";
    const KEY_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIHnRmXjyY8AnWhEW9sXEQvdaRKXB0IxDNAiG+tHk6PT0oAoGCCqGSM49
AwEHoUQDQgAEkbzj958x+KJcGtwHMk+BrjD+bDShc2Pxpx9UhdFYlLguegUms/eh
SVbc08FDCVwrKzeXhJGQRvkw8DpZoLS6Pg==
-----END EC PRIVATE KEY-----";

    #[test]
    fn pem_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let both = write("both.pem", &format!("{CERT}\n{KEY_PKCS8}\n"));
        assert_eq!(load_certs("sslcert", &both).unwrap().len(), 1);
        assert!(load_key(&both).is_ok());
        assert!(load_key(&write("sec1.pem", KEY_SEC1)).is_ok());
        let cert = write("cert.pem", CERT);
        let e = load_key(&cert).unwrap_err().to_string();
        assert!(e.contains("no unencrypted PEM private key"), "{e}");
        let junk = write("junk.pem", "not a certificate\n");
        let e = load_certs("sslrootcert", &junk).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate in it"), "{e}");
        assert!(load_crls(&junk).unwrap().is_empty());
    }

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.to_owned(),
            hostaddr: None,
            port,
        }
    }

    #[test]
    fn unreachable_messages() {
        let e = ConnectError::Unreachable {
            target: target("db", 5432),
            error: io::Error::from_raw_os_error(111),
        };
        assert_eq!(
            e.to_string(),
            "could not connect to server at db:5432: connection refused (is the server running and accepting TCP connections?)"
        );
        assert!(e.is_retryable());
        let e = ConnectError::Unreachable {
            target: target("/tmp", 5433),
            error: io::Error::from_raw_os_error(2),
        };
        assert_eq!(
            e.to_string(),
            "could not connect to server on socket \"/tmp/.s.PGSQL.5433\": no such file or directory (is the server running locally and accepting connections on that socket?)"
        );
    }

    #[test]
    fn retryable_classes() {
        let server = |code: SqlState| ConnectError::Server {
            target: target("h", 1),
            code,
            message: "m".to_owned(),
        };
        assert!(server(SqlState::CANNOT_CONNECT_NOW).is_retryable());
        assert!(server(SqlState::TOO_MANY_CONNECTIONS).is_retryable());
        assert!(!server(SqlState::FEATURE_NOT_SUPPORTED).is_retryable());
        assert!(server(SqlState::CANNOT_CONNECT_NOW).tries_next_host());
        assert!(!server(SqlState::TOO_MANY_CONNECTIONS).tries_next_host());
        let auth = ConnectError::Auth {
            user: "u".into(),
            message: "m".into(),
            hint: "h".into(),
        };
        assert!(!auth.is_retryable());
        assert!(!auth.tries_next_host());
        assert!(!ConnectError::DatabaseMissing { dbname: "d".into() }.is_retryable());
    }

    #[test]
    fn unsupported_settings_are_refused() {
        let ci = ConnInfo::parse("host=h require_auth=scram-sha-256").unwrap();
        assert_eq!(
            check_supported(&ci).unwrap_err().to_string(),
            "connection option require_auth=scram-sha-256 is not supported (hint: remove it from the connection string or the environment)"
        );
        let ci = ConnInfo::parse("host=h gssencmode=prefer sslcertmode=allow").unwrap();
        assert!(check_supported(&ci).is_ok());
    }

    #[test]
    fn protocol_version_bounds() {
        let v = |s: &str| protocol_versions(&ConnInfo::parse(s).unwrap()).map(|v| v.len());
        assert_eq!(v("host=h").unwrap(), 2);
        assert_eq!(v("ssl_min_protocol_version=TLSv1.3").unwrap(), 1);
        assert_eq!(v("ssl_max_protocol_version=TLSv1.2").unwrap(), 1);
        assert!(v("ssl_max_protocol_version=TLSv1.1").is_err());
    }

    #[test]
    fn tls_connector_builds_for_every_mode() {
        for mode in ["prefer", "require", "verify-full"] {
            let ci = ConnInfo::parse(&format!("host=h sslmode={mode}")).unwrap();
            let sslmode = ci.sslmode.unwrap();
            // verify-full may find no system roots in a minimal container.
            match tls_connector(&ci, sslmode) {
                Ok(_) | Err(ConnectError::TlsSettings { .. }) => {}
                Err(e) => panic!("{mode}: {e}"),
            }
        }
        let ci =
            ConnInfo::parse("host=h sslmode=verify-ca sslrootcert=/nonexistent/ca.pem").unwrap();
        let e = tls_connector(&ci, SslMode::VerifyCa).err().unwrap();
        assert_eq!(
            e.to_string(),
            "could not use sslrootcert file \"/nonexistent/ca.pem\": no such file or directory"
        );
        let ci = ConnInfo::parse("host=h sslcert=/c.pem").unwrap();
        assert!(matches!(
            tls_connector(&ci, SslMode::Require),
            Err(ConnectError::TlsSettings { .. })
        ));
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        // Bind then drop a listener to get a port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let ci = ConnInfo::parse(&format!(
            "host=127.0.0.1 port={port} user=u dbname=d sslmode=disable"
        ))
        .unwrap();
        let e = connect(&ci, "pgtide-test").await.unwrap_err();
        assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("could not connect to server at 127.0.0.1:{port}: connection refused (is the server running and accepting TCP connections?)")
        );
    }
}
