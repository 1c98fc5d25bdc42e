//! What the Azure and GCS drivers share: one hyper client (rustls with the
//! system's roots, plain HTTP for emulators) that also serves object_store's
//! credential providers, the retry loop for our own requests, and checksums
//! (MD5 for Azure blocks, CRC32C for GCS). Request signing and OAuth are
//! never done here: object_store signs (Azure shared key, SAS) and fetches
//! tokens (Entra ID, Google ADC); this module only moves bytes.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use object_store::client::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse,
    HttpResponseBody, HttpService,
};

use super::StorageError;

/// Attempts per request (first try + retries) for retryable failures.
pub(super) const MAX_ATTEMPTS: u32 = 6;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole exchange of one request: sending the body, the answer and its body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Stores answer their errors in a few hundred bytes; more is not read.
const MAX_ERROR_BODY: usize = 64 * 1024;

type HyperClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, HttpRequestBody>;

/// The HTTP client of the cloud drivers, cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Http {
    client: HyperClient,
}

impl Http {
    pub(super) fn new() -> Http {
        let mut roots = rustls::RootCertStore::empty();
        // Without system roots, https fails at the handshake with an error
        // that says so; plain-HTTP emulators still work.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Http {
            client: Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https),
        }
    }

    /// An object_store connector on this client (for token requests).
    pub(super) fn connector(&self) -> Connector {
        Connector(self.clone())
    }

    /// Send one request and read the whole answer. `Err` only when no
    /// answer came (connection, timeout); any status is `Ok`.
    pub(super) async fn send(&self, req: HttpRequest) -> Result<Response, Transport> {
        super::requests::count(super::requests::classify_http(
            req.method().as_str(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
        ));
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| Transport::from_client(&e))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Transport {
                    message: format!("reading the answer: {}", error_chain(&e)),
                    retryable: true,
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Transport {
                message: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
                retryable: true,
            })?
    }
}

/// A whole answer.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Bytes,
}

impl Response {
    pub(super) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text for an error message: one line, bounded.
    pub(super) fn body_text(&self) -> String {
        let b = &self.body[..self.body.len().min(MAX_ERROR_BODY)];
        one_line(&String::from_utf8_lossy(b))
    }

    /// True for answers worth sending again: 5xx (but 501, the store does
    /// not implement the operation), 429 and 408.
    pub(super) fn retryable(&self) -> bool {
        (self.status >= 500 && self.status != 501) || self.status == 429 || self.status == 408
    }
}

/// No answer: connection refused or reset, DNS, TLS, timeout.
#[derive(Debug, Clone)]
pub(super) struct Transport {
    pub(super) message: String,
    pub(super) retryable: bool,
}

impl Transport {
    fn from_client(e: &hyper_util::client::legacy::Error) -> Transport {
        Transport {
            message: error_chain(e),
            // Connecting failed, or the connection broke: try again. What
            // is left is a request that could not be built (a bug).
            retryable: e.is_connect() || std::error::Error::source(e).is_some(),
        }
    }
}

/// Send `make()` until the answer is not a retryable one or the attempts
/// are used up; each retry waits longer (200 ms doubling, at most 10 s) and
/// is counted in `storage::RETRIES`. The last answer or failure is returned.
pub(super) async fn with_retries<F, Fut>(mut make: F) -> Result<Response, Transport>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Response, Transport>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let r = make().await;
        let again = match &r {
            Ok(resp) => resp.retryable(),
            Err(t) => t.retryable,
        };
        if !again || attempt >= MAX_ATTEMPTS {
            return r;
        }
        attempt += 1;
        super::RETRIES.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay + Duration::from_millis(fastrand::u64(0..100))).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// `Display` of an error and its sources, joined with `: `, skipping parts
/// already said, on one line.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    one_line(&parts.join(": "))
}

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn service(
    op: &'static str,
    key: &str,
    message: impl Into<String>,
    retryable: bool,
) -> StorageError {
    StorageError::Service {
        op,
        key: key.to_string(),
        message: message.into(),
        retryable,
    }
}

/// A read of `offset`+`len` that lies past the end of `key` (of `size`
/// bytes when known).
pub(super) fn past_end(key: &str, offset: u64, len: u64, size: Option<u64>) -> StorageError {
    service(
        "read",
        key,
        match size {
            Some(s) => format!("range {offset}+{len} is past the end of the object ({s} bytes)"),
            None => format!("range {offset}+{len} is past the end of the object"),
        },
        false,
    )
}

/// A whole-object read whose body is shorter or longer than the length
/// the store announced is a (retryable) failure.
pub(super) fn check_announced_len(
    key: &str,
    announced: Option<u64>,
    body: &[u8],
) -> Result<(), StorageError> {
    match announced {
        Some(n) if n != body.len() as u64 => Err(service(
            "read",
            key,
            format!("received {} bytes, the store announced {n}", body.len()),
            true,
        )),
        _ => Ok(()),
    }
}

/// A transport failure on `key` as a `StorageError`.
pub(super) fn transport(op: &'static str, key: &str, t: Transport) -> StorageError {
    service(op, key, t.message, t.retryable)
}

/// Run a checksum on the blocking pool when the data is large (never on
/// reactor threads).
pub(super) async fn on_blocking<T: Send + 'static>(
    data: Bytes,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> T {
    if data.len() < 64 * 1024 {
        return f(&data);
    }
    match tokio::task::spawn_blocking(move || f(&data)).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// MD5 of `data`, base64 (the `Content-MD5` form).
pub(super) async fn md5_b64(data: Bytes) -> String {
    use md5::Digest as _;
    let d = on_blocking(data, |b| md5::Md5::digest(b)).await;
    b64(&d)
}

/// CRC32C (Castagnoli) of `data`.
pub(super) async fn crc32c(data: Bytes) -> u32 {
    on_blocking(data, crc_fast::crc32_iscsi).await
}

/// CRC32C of `a ‖ b` from the CRC32C of each and the length of `b`.
pub(super) fn crc32c_combine(a: u32, b: u32, len_b: u64) -> u32 {
    crc_fast::checksum_combine(
        crc_fast::CrcAlgorithm::Crc32Iscsi,
        u64::from(a),
        u64::from(b),
        len_b,
    ) as u32
}

/// Base64 of a CRC32C in big-endian bytes (GCS's `crc32c` form).
pub(super) fn crc32c_b64(crc: u32) -> String {
    b64(&crc.to_be_bytes())
}

pub(super) fn b64(data: &[u8]) -> String {
    aws_smithy_types::base64::encode(data)
}

/// object_store's view of [`Http`]: its credential providers (Entra ID,
/// managed identity, Google tokens) send their requests through it.
#[derive(Debug, Clone)]
pub(super) struct Connector(Http);

impl object_store::client::HttpConnector for Connector {
    fn connect(&self, _options: &object_store::ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Service(self.0.clone())))
    }
}

#[derive(Debug)]
struct Service(Http);

#[async_trait]
impl HttpService for Service {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.0.client.request(req))
            .await
            .map_err(|_| {
                HttpError::new(
                    HttpErrorKind::Timeout,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"),
                )
            })?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let (parts, body) = resp.into_parts();
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

/// `part_size=` / `block_size=` values: sizes as every flag takes them,
/// between `min` and `max`.
pub(super) fn parse_size_option(
    name: &str,
    value: &str,
    min: u64,
    max: u64,
) -> Result<usize, String> {
    let n = crate::units::parse_size(value).map_err(|e| format!("{name}: {e}"))?;
    if !(min..=max).contains(&n) {
        return Err(format!(
            "{name}={value:?}: must be between {} and {}",
            crate::units::human_bytes(min),
            crate::units::human_bytes(max)
        ));
    }
    Ok(n as usize)
}

/// The endpoint of a location: `http://` or `https://`, no trailing `/`.
pub(super) fn parse_endpoint(value: &str) -> Result<String, String> {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(format!(
            "endpoint {value:?} must start with http:// or https://"
        ));
    }
    url::Url::parse(value).map_err(|e| format!("endpoint {value:?}: {e}"))?;
    Ok(value.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checksums() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(Bytes::from(vec![0u8; 32])).await, 0x8A91_36AA);
        let (a, b) = (b"hello ".as_slice(), b"world".as_slice());
        let whole = crc_fast::crc32_iscsi(b"hello world");
        assert_eq!(
            crc32c_combine(
                crc_fast::crc32_iscsi(a),
                crc_fast::crc32_iscsi(b),
                b.len() as u64
            ),
            whole
        );
        assert_eq!(crc32c_b64(0xC994_65AA), "yZRlqg==");
        assert_eq!(
            md5_b64(Bytes::from_static(b"")).await,
            "1B2M2Y8AsgTpgAmY7PhCfg=="
        );
    }
}
