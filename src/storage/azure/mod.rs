//! Azure Blob Storage driver: block blobs. Small objects go up in one Put
//! Blob, larger ones as staged blocks (a bounded number in flight) committed
//! by Put Block List; every blob and block is sent with its `Content-MD5`,
//! which the service checks. Ranged reads (`x-ms-range`), paginated listing
//! (List Blobs, 5,000 a page), batch delete (Blob Batch, 256 a batch).
//!
//! object_store resolves the credentials (account key, SAS, Entra ID
//! client secret or workload identity, managed identity, Azure CLI) and
//! signs every request (`AzureAuthorizer`); this driver builds the requests
//! and owns the mapping of answers to `StorageError` (one line with the
//! service's error code, never a debug dump). It never interprets what it
//! stores.
//!
//! Repository location: `az://container/prefix?account=NAME&endpoint=URL&block_size=8MiB`;
//! see [`location`] for what comes from the environment. `--object-lock`
//! (version-level immutability: the container check, the policy on writes,
//! deletes by version) is in `retention.rs`.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use object_store::azure::{AzureAuthorizer, AzureCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use tokio::task::JoinHandle;

use super::cloud::{self, check_announced_len, past_end, service, transport, Response};
use super::{DynStorage, ObjectMeta, ObjectWriter, Retention, Storage, StorageError};

mod location;
mod retention;
mod writer;

pub use location::AzureOptions;
use writer::AzureWriter;

const MIB: u64 = 1024 * 1024;
/// Smallest block size `block_size=` takes.
pub const MIN_BLOCK_SIZE: usize = MIB as usize;
/// Largest block Azure accepts (4000 MiB).
pub const MAX_BLOCK_SIZE: usize = 4000 * MIB as usize;
/// Block size used when the location does not say.
pub const DEFAULT_BLOCK_SIZE: usize = 8 * MIB as usize;
/// Azure commits at most this many blocks into one blob.
const MAX_BLOCKS: u32 = 50_000;
/// The block size doubles after every this many blocks, so that an object
/// of unknown size stays under `MAX_BLOCKS`.
const GROW_EVERY_BLOCKS: u32 = 5_000;
/// Blocks uploading while the next one fills: a writer holds at most
/// (BLOCKS_IN_FLIGHT + 1) × block size.
const BLOCKS_IN_FLIGHT: usize = 2;
/// Blob Batch takes at most this many sub-requests.
const DELETE_BATCH: usize = 256;
/// Deletes in flight when the service has no Blob Batch (some emulators).
const DELETES_IN_FLIGHT: usize = 16;

/// Error codes that mean the credentials or their rights are wrong.
const ACCESS_CODES: &[&str] = &[
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationServiceMismatch",
    "AuthorizationSourceIPMismatch",
    "AuthorizationProtocolMismatch",
    "InsufficientAccountPermissions",
    "InvalidAuthenticationInfo",
    "AccountIsDisabled",
    "KeyBasedAuthenticationNotPermitted",
];

#[derive(Debug)]
struct Inner {
    http: cloud::Http,
    store: object_store::azure::MicrosoftAzure,
    account: String,
    /// The blob service URL (`https://acct.blob.core.windows.net`).
    endpoint: url::Url,
    container: String,
    prefix: String,
    block_size: usize,
    location: String,
}

/// The parts of an Azure error answer.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl Inner {
    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn container_url(&self) -> url::Url {
        let mut u = self.endpoint.clone();
        u.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .push(&self.container);
        u
    }

    fn blob_url(&self, key: &str) -> url::Url {
        let mut u = self.container_url();
        u.path_segments_mut()
            .expect("http(s) URLs have a path")
            .extend(self.full_key(key).split('/'));
        u
    }

    async fn credential(&self) -> Result<Arc<AzureCredential>, StorageError> {
        self.store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| StorageError::AccessDenied {
                what: format!(
                    "{} (Azure credentials could not be loaded: {}; set AZURE_STORAGE_CONNECTION_STRING, \
                     or AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_SAS_TOKEN)",
                    self.location,
                    cloud::error_chain(&e)
                ),
            })
    }

    /// A signed request.
    fn signed(
        &self,
        cred: &AzureCredential,
        method: http::Method,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<HttpRequest, StorageError> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header("content-length", body.len());
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let mut req: HttpRequest = b
            .body(HttpRequestBody::from(body))
            .map_err(|e| service("build request for", url.path(), e.to_string(), false))?;
        AzureAuthorizer::new(cred, &self.account)
            .try_authorize(&mut req)
            .map_err(|e| StorageError::AccessDenied {
                what: format!(
                    "{} (signing failed: {})",
                    self.location,
                    cloud::error_chain(&e)
                ),
            })?;
        Ok(req)
    }

    /// Send a signed request with retries; the answer whatever its status.
    async fn send(
        &self,
        op: &'static str,
        key: &str,
        method: http::Method,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, StorageError> {
        let cred = self.credential().await?;
        cloud::with_retries(|| async {
            // Signed again for each attempt: the date is part of it.
            let req = match self.signed(&cred, method.clone(), url, headers, body.clone()) {
                Ok(r) => r,
                Err(e) => {
                    return Err(cloud::Transport {
                        message: e.to_string(),
                        retryable: false,
                    })
                }
            };
            self.http.send(req).await
        })
        .await
        .map_err(|t| transport(op, key, t))
    }

    /// Map an unsuccessful answer about object `key`.
    fn error(&self, op: &'static str, key: &str, resp: &Response) -> StorageError {
        let parsed: ErrorBody = if resp.body.is_empty() {
            ErrorBody::default()
        } else {
            quick_xml::de::from_str(&String::from_utf8_lossy(&resp.body)).unwrap_or_default()
        };
        let code = resp
            .header("x-ms-error-code")
            .map(str::to_string)
            .or(parsed.code);
        let code = code.as_deref();
        if code == Some("ContainerNotFound") {
            return StorageError::BucketNotFound {
                noun: "container",
                bucket: self.container.clone(),
            };
        }
        if code == Some("BlobNotFound") || (resp.status == 404 && code.is_none()) {
            return StorageError::NotFound {
                key: key.to_string(),
            };
        }
        // A version under its immutability policy or a legal hold; the
        // caller that can reads its date back.
        if op == "delete" && code.is_some_and(|c| retention::IMMUTABLE_CODES.contains(&c)) {
            return StorageError::Retained {
                key: key.to_string(),
                until: None,
            };
        }
        if resp.status == 401
            || resp.status == 403
            || code.is_some_and(|c| ACCESS_CODES.contains(&c))
        {
            let what = format!("az://{}/{}", self.container, self.full_key(key));
            let what = what.trim_end_matches('/').to_string();
            return StorageError::AccessDenied {
                what: match code {
                    Some(c) => format!("{what} ({c})"),
                    None => what,
                },
            };
        }
        let msg = parsed
            .message
            .map(|m| cloud::one_line(m.lines().next().unwrap_or("")))
            .unwrap_or_default();
        let message = match (code, msg.is_empty()) {
            (Some(c), false) => format!("{c}: {msg} (HTTP {})", resp.status),
            (Some(c), true) => format!("{c} (HTTP {})", resp.status),
            (None, _) => format!("HTTP {}", resp.status),
        };
        service(op, key, message, resp.retryable())
    }

    /// Put Blob: the whole object with its MD5, optionally only if absent,
    /// with the immutability policy `retention` (from now) if given.
    async fn put_blob(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
        retention: Option<Retention>,
    ) -> Result<(), StorageError> {
        let md5 = cloud::md5_b64(data.clone()).await;
        let mut headers = vec![
            ("x-ms-blob-type", "BlockBlob".to_string()),
            ("content-md5", md5),
            ("content-type", "application/octet-stream".to_string()),
        ];
        if if_absent {
            headers.push(("if-none-match", "*".to_string()));
        }
        if let Some(r) = retention {
            headers.extend(retention::policy_headers(&r, chrono::Utc::now()));
        }
        let url = self.blob_url(key);
        let resp = self
            .send("upload", key, http::Method::PUT, &url, &headers, data)
            .await?;
        if resp.ok() {
            return Ok(());
        }
        if retention.is_some() {
            if let Some(e) = self.policy_refused(&resp) {
                return Err(e);
            }
        }
        if if_absent
            && (resp.status == 409 || resp.status == 412)
            && !matches!(
                resp.header("x-ms-error-code"),
                Some("ContainerNotFound" | "LeaseIdMissing")
            )
        {
            return Err(StorageError::AlreadyExists {
                key: key.to_string(),
            });
        }
        if retention.is_some() {
            return Err(self.policy_write_error("upload", key, &resp));
        }
        Err(self.error("upload", key, &resp))
    }

    /// Get Blob Properties of `key` (of its version `version`, if given).
    async fn stat(&self, key: &str, version: Option<&str>) -> Result<Response, StorageError> {
        let mut url = self.blob_url(key);
        if let Some(v) = version {
            url.query_pairs_mut().append_pair("versionid", v);
        }
        let resp = self
            .send("stat", key, http::Method::HEAD, &url, &[], Bytes::new())
            .await?;
        if !resp.ok() {
            return Err(self.error("stat", key, &resp));
        }
        Ok(resp)
    }

    fn size_of(key: &str, resp: &Response) -> Result<u64, StorageError> {
        resp.header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| service("stat", key, "the store sent no object size", false))
    }

    async fn head(&self, key: &str) -> Result<u64, StorageError> {
        Inner::size_of(key, &self.stat(key, None).await?)
    }

    /// Delete one blob; a missing one is fine.
    async fn delete_one(&self, key: &str) -> Result<(), StorageError> {
        let url = self.blob_url(key);
        let resp = self
            .send("delete", key, http::Method::DELETE, &url, &[], Bytes::new())
            .await?;
        if resp.ok()
            || resp.status == 404 && resp.header("x-ms-error-code") != Some("ContainerNotFound")
        {
            return Ok(());
        }
        Err(self.error("delete", key, &resp))
    }

    /// One Blob Batch of deletes. `Ok(false)`: the service has no Blob
    /// Batch (the caller deletes one by one).
    async fn delete_batch(&self, keys: &[String]) -> Result<bool, StorageError> {
        let cred = self.credential().await?;
        let boundary = format!("batch_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut body = String::new();
        for (i, key) in keys.iter().enumerate() {
            let url = self.blob_url(key);
            let sub = self.signed(&cred, http::Method::DELETE, &url, &[], Bytes::new())?;
            let path = match sub.uri().query() {
                Some(q) => format!("{}?{q}", sub.uri().path()),
                None => sub.uri().path().to_string(),
            };
            body.push_str(&format!(
                "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {i}\r\n\r\nDELETE {path} HTTP/1.1\r\n"
            ));
            for (name, value) in sub.headers() {
                if name == "content-length" {
                    continue;
                }
                body.push_str(&format!(
                    "{name}: {}\r\n",
                    value.to_str().unwrap_or_default()
                ));
            }
            body.push_str("Content-Length: 0\r\n\r\n");
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let mut url = self.container_url();
        url.query_pairs_mut()
            .append_pair("restype", "container")
            .append_pair("comp", "batch");
        let first = keys.first().map(String::as_str).unwrap_or("");
        let resp = self
            .send(
                "delete",
                first,
                http::Method::POST,
                &url,
                &[(
                    "content-type",
                    format!("multipart/mixed; boundary={boundary}"),
                )],
                Bytes::from(body),
            )
            .await?;
        if !resp.ok() {
            let code = resp.header("x-ms-error-code");
            if matches!(resp.status, 400 | 404 | 405 | 501)
                && !matches!(code, Some("ContainerNotFound"))
                && !code.is_some_and(|c| ACCESS_CODES.contains(&c))
            {
                // Handled by the caller: it deletes one by one.
                tracing::debug!(
                    status = resp.status,
                    answer = %resp.body_text(),
                    "no Blob Batch here: deleting one by one"
                );
                return Ok(false);
            }
            return Err(self.error("delete", first, &resp));
        }
        // Each part: `HTTP/1.1 202 Accepted`, or 404 for a missing blob.
        let text = String::from_utf8_lossy(&resp.body);
        let mut statuses = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("HTTP/1.1 ") {
                statuses.push(rest.split(' ').next().and_then(|s| s.parse::<u16>().ok()));
            }
        }
        if statuses.len() != keys.len() {
            return Err(service(
                "delete",
                first,
                format!(
                    "the batch answer holds {} results for {} deletes",
                    statuses.len(),
                    keys.len()
                ),
                true,
            ));
        }
        for (key, status) in keys.iter().zip(statuses) {
            match status {
                Some(s) if (200..300).contains(&s) || s == 404 => {}
                // Told apart by a single delete, which says why.
                _ => self.delete_one(key).await?,
            }
        }
        Ok(true)
    }
}

/// An Azure Blob Storage container (and blob name prefix) as a `Storage`.
#[derive(Debug, Clone)]
pub struct Azure {
    inner: Arc<Inner>,
    /// Immutability policy put on every blob written (`with_retention`).
    retention: Option<Retention>,
    /// Deletes remove every version of a key (handles of a repository with
    /// Object Lock, whose container is versioned).
    versioned: bool,
}

/// The parts of a List Blobs answer pgtide reads.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    #[serde(default)]
    blobs: Blobs,
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Blobs {
    #[serde(rename = "Blob", default)]
    blob: Vec<Blob>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Blob {
    name: String,
    properties: BlobProperties,
}

#[derive(Debug, serde::Deserialize)]
struct BlobProperties {
    #[serde(rename = "Content-Length")]
    content_length: u64,
}

impl Azure {
    /// Resolve account, endpoint and credentials, and check that the
    /// container can be listed, so that a missing container
    /// (`BucketNotFound`), bad credentials (`AccessDenied`) or an
    /// unreachable endpoint are reported before any work starts.
    pub async fn connect(opts: AzureOptions) -> Result<Azure, StorageError> {
        let http = cloud::Http::new();
        let r = location::resolve(&opts, &http)?;
        let inner = Inner {
            http,
            store: r.store,
            account: r.account,
            endpoint: r.endpoint,
            container: opts.container.clone(),
            prefix: opts.prefix.clone(),
            block_size: opts.block_size,
            location: opts.location(),
        };
        let azure = Azure {
            inner: Arc::new(inner),
            retention: None,
            versioned: false,
        };
        azure
            .list_page("", None, Some(1))
            .await
            .map_err(|e| match e {
                StorageError::Service {
                    message, retryable, ..
                } => service("open", &azure.inner.location, message, retryable),
                other => other,
            })?;
        Ok(azure)
    }

    /// Create the container of `opts` (Create Container); an existing one
    /// is fine. pgtide itself never creates containers: this is for test
    /// set-up and tools.
    pub async fn create_container(opts: &AzureOptions) -> Result<(), StorageError> {
        let http = cloud::Http::new();
        let r = location::resolve(opts, &http)?;
        let inner = Inner {
            http,
            store: r.store,
            account: r.account,
            endpoint: r.endpoint,
            container: opts.container.clone(),
            prefix: String::new(),
            block_size: opts.block_size,
            location: opts.location(),
        };
        let mut url = inner.container_url();
        url.query_pairs_mut().append_pair("restype", "container");
        let resp = inner
            .send(
                "create container",
                "",
                http::Method::PUT,
                &url,
                &[],
                Bytes::new(),
            )
            .await?;
        if resp.ok() || resp.header("x-ms-error-code") == Some("ContainerAlreadyExists") {
            return Ok(());
        }
        Err(inner.error("create container", "", &resp))
    }

    /// One page of List Blobs under `prefix` (relative to the repository).
    async fn list_page(
        &self,
        prefix: &str,
        marker: Option<&str>,
        max: Option<u32>,
    ) -> Result<(Vec<ObjectMeta>, Option<String>), StorageError> {
        let az = &self.inner;
        let mut url = az.container_url();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("restype", "container")
                .append_pair("comp", "list")
                .append_pair("prefix", &az.full_key(prefix))
                .append_pair("maxresults", &max.unwrap_or(5000).to_string());
            if let Some(m) = marker {
                q.append_pair("marker", m);
            }
        }
        let resp = az
            .send("list", prefix, http::Method::GET, &url, &[], Bytes::new())
            .await?;
        if !resp.ok() {
            return Err(az.error("list", prefix, &resp));
        }
        let text = String::from_utf8_lossy(&resp.body);
        let page: EnumerationResults = quick_xml::de::from_str(&text).map_err(|e| {
            service(
                "list",
                prefix,
                format!("unreadable List Blobs answer: {e}"),
                true,
            )
        })?;
        let mut out = Vec::with_capacity(page.blobs.blob.len());
        for b in page.blobs.blob {
            let Some(rel) = b.name.strip_prefix(&az.prefix) else {
                continue;
            };
            // Names ending in `/` are folder markers made by other tools.
            if rel.is_empty() || rel.ends_with('/') {
                continue;
            }
            out.push(ObjectMeta {
                key: rel.to_string(),
                size: b.properties.content_length,
            });
        }
        Ok((out, page.next_marker.filter(|m| !m.is_empty())))
    }
}

#[async_trait]
impl Storage for Azure {
    fn location(&self) -> String {
        self.inner.location.clone()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put_blob(key, data, false, self.retention).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put_blob(key, data, true, self.retention).await
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(AzureWriter::new(
            self.inner.clone(),
            key,
            self.retention,
        )))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let az = &self.inner;
        let url = az.blob_url(key);
        let resp = az
            .send("read", key, http::Method::GET, &url, &[], Bytes::new())
            .await?;
        if !resp.ok() {
            return Err(az.error("read", key, &resp));
        }
        let announced = resp
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        check_announced_len(key, announced, &resp.body)?;
        Ok(resp.body)
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        let past_end = |size: Option<u64>| past_end(key, offset, len, size);
        if len == 0 {
            let size = self.size(key).await?;
            return if offset <= size {
                Ok(Bytes::new())
            } else {
                Err(past_end(Some(size)))
            };
        }
        let end = offset.checked_add(len - 1).ok_or_else(|| past_end(None))?;
        let az = &self.inner;
        let url = az.blob_url(key);
        let resp = az
            .send(
                "read",
                key,
                http::Method::GET,
                &url,
                &[("x-ms-range", format!("bytes={offset}-{end}"))],
                Bytes::new(),
            )
            .await?;
        if resp.status == 416 {
            return Err(past_end(None));
        }
        if !resp.ok() {
            return Err(az.error("read", key, &resp));
        }
        if resp.body.len() as u64 == len {
            return Ok(resp.body);
        }
        let total = resp
            .header("content-range")
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, t)| t.parse::<u64>().ok());
        Err(past_end(total))
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let (page, next) = self.list_page(prefix, marker.as_deref(), None).await?;
            out.extend(page);
            match next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        let az = &self.inner;
        if self.versioned {
            // Every batch is tried; the first key still retained is
            // reported at the end.
            let mut retained = None;
            for batch in keys.chunks(DELETE_BATCH) {
                match az.delete_versions(batch).await {
                    Ok(()) => {}
                    Err(e @ StorageError::Retained { .. }) => {
                        retained.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            return retained.map_or(Ok(()), Err);
        }
        for batch in keys.chunks(DELETE_BATCH) {
            if batch.len() > 1 && az.delete_batch(batch).await? {
                continue;
            }
            futures::stream::iter(batch.iter().cloned().map(|k| {
                let az = self.inner.clone();
                async move { az.delete_one(&k).await }
            }))
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        }
        Ok(())
    }

    async fn check_retention(&self) -> Result<(), StorageError> {
        self.inner.check_immutability().await
    }

    fn with_retention(&self, retention: Retention) -> Result<DynStorage, StorageError> {
        Ok(Arc::new(Azure {
            inner: self.inner.clone(),
            retention: Some(retention),
            versioned: true,
        }))
    }

    fn without_retention(&self) -> Option<DynStorage> {
        self.retention?;
        Some(Arc::new(Azure {
            inner: self.inner.clone(),
            retention: None,
            versioned: self.versioned,
        }))
    }

    async fn retained_until(
        &self,
        key: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        Ok(self.inner.policy_of(key, None).await?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_answers_parse() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c">
  <Prefix>p/</Prefix><MaxResults>2</MaxResults>
  <Blobs>
    <Blob><Name>p/a&amp;b</Name><Properties><Content-Length>11</Content-Length><Content-MD5>x</Content-MD5></Properties></Blob>
    <BlobPrefix><Name>p/d/</Name></BlobPrefix>
    <Blob><Name>p/c</Name><Properties><Content-Length>0</Content-Length></Properties></Blob>
  </Blobs>
  <NextMarker>2!abc</NextMarker>
</EnumerationResults>"#;
        let r: EnumerationResults = quick_xml::de::from_str(xml).unwrap();
        let names: Vec<(&str, u64)> = r
            .blobs
            .blob
            .iter()
            .map(|b| (b.name.as_str(), b.properties.content_length))
            .collect();
        assert_eq!(names, [("p/a&b", 11), ("p/c", 0)]);
        assert_eq!(r.next_marker.as_deref(), Some("2!abc"));
        let empty = r#"<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>"#;
        let r: EnumerationResults = quick_xml::de::from_str(empty).unwrap();
        assert!(r.blobs.blob.is_empty());
        assert_eq!(r.next_marker.filter(|m| !m.is_empty()), None);
        let e: ErrorBody = quick_xml::de::from_str(
            "<?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code><Message>The specified container does not exist.\nRequestId:1</Message></Error>",
        )
        .unwrap();
        assert_eq!(e.code.as_deref(), Some("ContainerNotFound"));
    }
}
