//! S3 driver (aws-sdk-s3): whole-object PUT with a CRC32 checksum, conditional
//! create (`If-None-Match: *`), buffered multipart upload with per-part CRC32,
//! ranged GET, paginated listing, batch delete. It owns the mapping from SDK
//! errors to `StorageError` (one line, code and message of the service, never a
//! debug dump) and the retry policy of the SDK client. It must never interpret
//! what it stores, and never depend on ListParts (some S3-compatible servers
//! answer it in a shape the SDK cannot parse). Object Lock (retention on
//! writes, deletes by version, the bucket check) is in `retention.rs`.
//!
//! Repository location: `s3://bucket/prefix?endpoint=URL&region=R&path_style=true&part_size=16MiB`.
//! Missing options fall back to `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`,
//! `AWS_REGION` / `AWS_DEFAULT_REGION`, the profile's region, then `us-east-1`.
//! Credentials come from the standard chain of aws-config (environment,
//! profile, web identity, container, instance metadata).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::{DynStorage, ObjectMeta, ObjectWriter, Retention, Storage, StorageError};

const MIB: u64 = 1024 * 1024;
/// Smallest part S3 accepts (except the last one).
pub const MIN_PART_SIZE: usize = 5 * MIB as usize;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: usize = 5 * 1024 * MIB as usize;
/// Part size used when the location does not say.
pub const DEFAULT_PART_SIZE: usize = 8 * MIB as usize;
/// S3 refuses part numbers above this.
const MAX_PARTS: i32 = 10_000;
/// The part size doubles after every this many parts, so that an object of
/// unknown size stays under `MAX_PARTS` (8 MiB base: 8 TiB in 10,000 parts,
/// more than the 5 TiB S3 allows for one object).
const GROW_EVERY_PARTS: i32 = 1_000;
/// Parts being uploaded while the next one fills. Memory held by a writer is
/// at most (PARTS_IN_FLIGHT + 1) × part size.
const PARTS_IN_FLIGHT: usize = 2;
/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1_000;
/// SDK attempts per request (first try + retries) for retryable failures.
const MAX_ATTEMPTS: u32 = 6;
const DEFAULT_REGION: &str = "us-east-1";

mod errors;
mod location;
pub(super) mod retention;
mod writer;

use errors::*;
pub(crate) use location::decode_prefix;
pub use location::S3Options;
use retention::{chrono_time, lock_mode, sdk_time};

use writer::*;

/// CRC32 of `data`, base64 of its big-endian bytes (the `x-amz-checksum-crc32`
/// form). Computed on the blocking pool: never checksum on reactor threads.
async fn crc32_b64(data: Bytes) -> String {
    let crc = if data.len() < 64 * 1024 {
        crc32fast::hash(&data)
    } else {
        match tokio::task::spawn_blocking(move || crc32fast::hash(&data)).await {
            Ok(c) => c,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    };
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

// ---------------------------------------------------------------------------
// The driver

#[derive(Debug)]
struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    location: String,
}

impl Inner {
    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Map a failure on object `key` (relative to the prefix).
    fn error(&self, op: &'static str, key: &str, f: Failure) -> StorageError {
        let code = f.code.as_deref();
        if code == Some("NoSuchBucket") {
            return StorageError::BucketNotFound {
                noun: "bucket",
                bucket: self.bucket.clone(),
            };
        }
        if code == Some("NoSuchKey")
            || (f.status == Some(404) && matches!(code, None | Some("NotFound")))
        {
            return StorageError::NotFound {
                key: key.to_string(),
            };
        }
        if f.status == Some(403) || code.is_some_and(|c| ACCESS_CODES.contains(&c)) {
            let what = format!("s3://{}/{}", self.bucket, self.full_key(key));
            return StorageError::AccessDenied {
                what: match code {
                    Some(c) => format!("{what} ({c})"),
                    None => what,
                },
            };
        }
        service(op, key, f.message, f.retryable)
    }

    async fn put_object(
        &self,
        op: &'static str,
        key: &str,
        data: Bytes,
        if_absent: bool,
        retention: Option<Retention>,
    ) -> Result<(), StorageError> {
        let crc = crc32_b64(data.clone()).await;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(data.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(crc)
            .body(ByteStream::from(data));
        if if_absent {
            req = req.if_none_match("*");
        }
        if let Some(r) = retention {
            // Dated when the request is made: the object exists at most
            // from then on.
            req = req
                .object_lock_mode(lock_mode(r.mode))
                .object_lock_retain_until_date(sdk_time(r.until(chrono::Utc::now())));
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = failure(e);
                if if_absent
                    && (f.status == Some(412) || f.code.as_deref() == Some("PreconditionFailed"))
                {
                    return Err(StorageError::AlreadyExists {
                        key: key.to_string(),
                    });
                }
                Err(self.error(op, key, f))
            }
        }
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = failure(e);
                if f.code.as_deref() == Some("NoSuchUpload") || f.status == Some(404) {
                    return Ok(());
                }
                Err(self.error("abort upload of", key, f))
            }
        }
    }
}

/// An S3 bucket (and key prefix) as a `Storage`.
#[derive(Debug, Clone)]
pub struct S3 {
    inner: Arc<Inner>,
    /// Object Lock retention put on every object written (`with_retention`).
    retention: Option<Retention>,
    /// Deletes remove every version of a key (handles of a repository with
    /// Object Lock, whose bucket is versioned).
    versioned: bool,
}

impl S3 {
    /// Build the client and check the bucket with HeadBucket, so that a
    /// missing bucket (`BucketNotFound`), bad credentials (`AccessDenied`) or a
    /// wrong region are reported before any work starts.
    pub async fn connect(opts: S3Options) -> Result<S3, StorageError> {
        let (client, credentials) = opts.client_and_credentials().await;
        let location = opts.location();
        // Resolve credentials once here: without any, the SDK's own error is a
        // retryable "dispatch failure" listing every provider it tried.
        if let Some(creds) = credentials {
            use aws_sdk_s3::config::ProvideCredentials as _;
            if let Err(e) = creds.provide_credentials().await {
                return Err(StorageError::AccessDenied {
                    what: format!(
                        "{location} (AWS credentials could not be loaded: {e}; set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
                    ),
                });
            }
        }
        let inner = Inner {
            client,
            bucket: opts.bucket.clone(),
            prefix: opts.prefix.clone(),
            part_size: opts.part_size,
            location,
        };
        if let Err(e) = inner
            .client
            .head_bucket()
            .bucket(&inner.bucket)
            .send()
            .await
        {
            let f = failure(e);
            let location = inner.location.clone();
            return Err(match f.status {
                Some(404) => StorageError::BucketNotFound {
                    noun: "bucket",
                    bucket: inner.bucket.clone(),
                },
                Some(403) => StorageError::AccessDenied { what: location },
                Some(301 | 400) if f.bucket_region.is_some() => service(
                    "open",
                    &location,
                    format!(
                        "bucket is in region {} (HTTP {}); add region={} to the repository location",
                        f.bucket_region.as_deref().unwrap_or_default(),
                        f.status.unwrap_or_default(),
                        f.bucket_region.as_deref().unwrap_or_default()
                    ),
                    false,
                ),
                _ => match inner.error("open", "", f) {
                    StorageError::Service {
                        message, retryable, ..
                    } => service("open", &location, message, retryable),
                    other => other,
                },
            });
        }
        Ok(S3 {
            inner: Arc::new(inner),
            retention: None,
            versioned: false,
        })
    }

    /// ListObjectsV2 pages of `prefix`, from after `start_after` when given.
    async fn list_from(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let s3 = &self.inner;
        let full_prefix = s3.full_key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = s3
                .client
                .list_objects_v2()
                .bucket(&s3.bucket)
                .prefix(&full_prefix)
                .set_start_after(start_after.map(|k| s3.full_key(k)))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3.error("list", prefix, failure(e)))?;
            for obj in resp.contents() {
                let Some(full) = obj.key() else { continue };
                // Keys ending in `/` are folder markers made by other tools;
                // pgtide never writes one.
                let Some(rel) = full.strip_prefix(&s3.prefix) else {
                    continue;
                };
                if rel.is_empty() || rel.ends_with('/') {
                    continue;
                }
                out.push(ObjectMeta {
                    key: rel.to_string(),
                    size: obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            }
            if resp.is_truncated() == Some(true) {
                match resp.next_continuation_token() {
                    Some(t) => token = Some(t.to_string()),
                    None => {
                        return Err(service(
                            "list",
                            prefix,
                            "truncated listing without a continuation token",
                            false,
                        ))
                    }
                }
            } else {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    /// The SDK client (for tests and tools that need raw S3 calls).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }
}

#[async_trait]
impl Storage for S3 {
    fn location(&self) -> String {
        self.inner.location.clone()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner
            .put_object("upload", key, data, false, self.retention)
            .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner
            .put_object("upload", key, data, true, self.retention)
            .await
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(S3Writer {
            s3: self.inner.clone(),
            retention: self.retention,
            key: key.to_string(),
            buf: BytesMut::new(),
            upload_id: None,
            next_part: 1,
            in_flight: VecDeque::new(),
            done: Vec::new(),
            size: 0,
            failed: false,
            closed: false,
        }))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let s3 = &self.inner;
        let resp = s3
            .client
            .get_object()
            .bucket(&s3.bucket)
            .key(s3.full_key(key))
            .send()
            .await
            .map_err(|e| s3.error("read", key, failure(e)))?;
        let expected = resp.content_length();
        let data = resp
            .body
            .collect()
            .await
            .map_err(|e| service("read", key, error_chain(&e), true))?
            .into_bytes();
        if let Some(n) = expected {
            if n != data.len() as i64 {
                return Err(service(
                    "read",
                    key,
                    format!("received {} bytes, the store announced {n}", data.len()),
                    true,
                ));
            }
        }
        Ok(data)
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        let past_end = |size: Option<u64>| {
            service(
                "read",
                key,
                match size {
                    Some(s) => {
                        format!("range {offset}+{len} is past the end of the object ({s} bytes)")
                    }
                    None => format!("range {offset}+{len} is past the end of the object"),
                },
                false,
            )
        };
        if len == 0 {
            let size = self.size(key).await?;
            return if offset <= size {
                Ok(Bytes::new())
            } else {
                Err(past_end(Some(size)))
            };
        }
        let end = offset.checked_add(len - 1).ok_or_else(|| past_end(None))?;
        let s3 = &self.inner;
        let resp = match s3
            .client
            .get_object()
            .bucket(&s3.bucket)
            .key(s3.full_key(key))
            .range(format!("bytes={offset}-{end}"))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let f = failure(e);
                if f.status == Some(416) || f.code.as_deref() == Some("InvalidRange") {
                    return Err(past_end(None));
                }
                return Err(s3.error("read", key, f));
            }
        };
        let total = resp
            .content_range()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, t)| t.parse::<u64>().ok());
        let ranged = resp.content_range().is_some();
        let data = resp
            .body
            .collect()
            .await
            .map_err(|e| service("read", key, error_chain(&e), true))?
            .into_bytes();
        if data.len() as u64 == len {
            return Ok(data);
        }
        if !ranged {
            // The store ignored Range and sent the whole object.
            let size = data.len() as u64;
            return if end < size {
                Ok(data.slice(offset as usize..=end as usize))
            } else {
                Err(past_end(Some(size)))
            };
        }
        Err(past_end(total))
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        let s3 = &self.inner;
        let resp = s3
            .client
            .head_object()
            .bucket(&s3.bucket)
            .key(s3.full_key(key))
            .send()
            .await
            .map_err(|e| s3.error("stat", key, failure(e)))?;
        resp.content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| service("stat", key, "the store sent no object size", false))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.list_from(prefix, None).await
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut v = self.list_from(prefix, Some(start_after)).await?;
        v.retain(|o| o.key.as_str() > start_after);
        Ok(v)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        if self.versioned {
            return self.inner.delete_versions(keys).await;
        }
        let s3 = &self.inner;
        for batch in keys.chunks(DELETE_BATCH) {
            let first = batch[0].as_str();
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(s3.full_key(k)).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| service("delete", first, error_chain(&e), false))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| service("delete", first, error_chain(&e), false))?;
            let resp = s3
                .client
                .delete_objects()
                .bucket(&s3.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3.error("delete", first, failure(e)))?;
            let errors: Vec<_> = resp
                .errors()
                .iter()
                .filter(|e| e.code() != Some("NoSuchKey"))
                .collect();
            if let Some(e) = errors.first() {
                let full = e.key().unwrap_or_default();
                let key = full.strip_prefix(&s3.prefix).unwrap_or(full);
                let code = e.code().unwrap_or("error");
                let more = match errors.len() {
                    1 => String::new(),
                    n => format!(" (and {} more keys failed)", n - 1),
                };
                let f = Failure {
                    status: None,
                    code: Some(code.to_string()),
                    message: format!("{code}: {}{more}", e.message().unwrap_or("").trim()),
                    retryable: RETRYABLE_CODES.contains(&code),
                    bucket_region: None,
                };
                return Err(s3.error("delete", key, f));
            }
        }
        Ok(())
    }

    async fn check_retention(&self) -> Result<(), StorageError> {
        self.inner.check_object_lock().await
    }

    fn with_retention(&self, retention: Retention) -> Result<DynStorage, StorageError> {
        Ok(Arc::new(S3 {
            inner: self.inner.clone(),
            retention: Some(retention),
            versioned: true,
        }))
    }

    fn without_retention(&self) -> Option<DynStorage> {
        self.retention?;
        Some(Arc::new(S3 {
            inner: self.inner.clone(),
            retention: None,
            versioned: self.versioned,
        }))
    }

    async fn retained_until(
        &self,
        key: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        self.inner.retained_until(key, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::location::endpoint_is_local_or_ip;
    use super::*;

    #[test]
    fn parse_full_location() {
        let o = S3Options::parse(
            "bkt/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1&path_style=true&part_size=16MiB",
        )
        .unwrap();
        assert_eq!(o.bucket, "bkt");
        assert_eq!(o.prefix, "some/prefix/");
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.path_style, Some(true));
        assert_eq!(o.part_size, 16 * MIB as usize);
        assert_eq!(o.location(), "s3://bkt/some/prefix");
        // Sizes as the flags take them (`--chunk-size 16MB`).
        for v in ["16MB", "16M", "16mib", "16777216"] {
            let o = S3Options::parse(&format!("bkt?part_size={v}")).unwrap();
            assert_eq!(o.part_size, 16 * MIB as usize, "{v}");
        }
    }

    #[test]
    fn parse_minimal_and_aliases() {
        let o = S3Options::parse("bkt").unwrap();
        assert_eq!(o.prefix, "");
        assert_eq!(o.part_size, DEFAULT_PART_SIZE);
        assert_eq!(o.location(), "s3://bkt");
        let o =
            S3Options::parse("bkt/?force_path_style=false&endpoint=http%3A%2F%2Fh%3A1").unwrap();
        assert_eq!(o.path_style, Some(false));
        assert_eq!(o.endpoint.as_deref(), Some("http://h:1"));
        let o = S3Options::parse("bkt/nightly%20copies/x?region=eu%2Dwest%2D1").unwrap();
        assert_eq!(o.prefix, "nightly copies/x/");
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "/prefix",
            "bkt?nope=1",
            "bkt?endpoint=127.0.0.1:9000",
            "bkt?part_size=1MiB",
            "bkt?part_size=6TiB",
            "bkt?path_style=maybe",
            "bkt/a//b",
            "b kt",
            "bkt:9000/x",
            "user@bkt",
        ] {
            assert!(S3Options::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn part_size_keeps_unknown_objects_under_the_part_limit() {
        let base = DEFAULT_PART_SIZE;
        assert_eq!(part_size_for(base, 1), base);
        assert_eq!(part_size_for(base, 1000), base);
        assert_eq!(part_size_for(base, 1001), 2 * base);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size_for(base, n) as u64).sum();
        assert!(
            total >= 5 * 1024 * 1024 * MIB,
            "10,000 parts hold only {total} bytes"
        );
        let total_min: u64 = (1..=MAX_PARTS)
            .map(|n| part_size_for(MIN_PART_SIZE, n) as u64)
            .sum();
        assert!(total_min >= 4 * 1024 * 1024 * MIB);
        assert!((1..=MAX_PARTS).all(|n| part_size_for(base, n) <= MAX_PART_SIZE));
    }

    fn inner() -> Inner {
        Inner {
            client: Client::from_conf(
                aws_sdk_s3::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .build(),
            ),
            bucket: "bkt".into(),
            prefix: "pre/".into(),
            part_size: DEFAULT_PART_SIZE,
            location: "s3://bkt/pre".into(),
        }
    }

    fn service_failure(status: u16, code: Option<&str>) -> Failure {
        use aws_sdk_s3::operation::get_object::GetObjectError;
        let mut meta = aws_sdk_s3::error::ErrorMetadata::builder().message("words");
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let raw = HttpResponse::new(
            status.try_into().unwrap(),
            aws_sdk_s3::primitives::SdkBody::empty(),
        );
        failure(SdkError::service_error(
            GetObjectError::generic(meta.build()),
            raw,
        ))
    }

    #[test]
    fn service_errors_are_classified() {
        let s3 = inner();
        let e = s3.error("read", "k", service_failure(503, Some("SlowDown")));
        assert!(e.is_retryable(), "{e:?}");
        assert_eq!(e.to_string(), "read k: SlowDown: words (HTTP 503)");
        assert!(s3
            .error("read", "k", service_failure(500, None))
            .is_retryable());
        assert!(s3
            .error("read", "k", service_failure(400, Some("RequestTimeout")))
            .is_retryable());
        let e = s3.error("read", "k", service_failure(400, Some("InvalidArgument")));
        assert!(
            !e.is_retryable() && matches!(e, StorageError::Service { .. }),
            "{e:?}"
        );
        let e = s3.error("read", "k", service_failure(404, Some("NoSuchKey")));
        assert!(
            matches!(&e, StorageError::NotFound { key } if key == "k"),
            "{e:?}"
        );
        assert!(s3
            .error("stat", "k", service_failure(404, None))
            .is_not_found());
        let e = s3.error("read", "k", service_failure(404, Some("NoSuchBucket")));
        assert!(matches!(e, StorageError::BucketNotFound { .. }), "{e:?}");
        let e = s3.error(
            "read",
            "k",
            service_failure(403, Some("InvalidAccessKeyId")),
        );
        match e {
            StorageError::AccessDenied { what } => {
                assert_eq!(what, "s3://bkt/pre/k (InvalidAccessKeyId)")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_completion_with_etag_counts_as_done() {
        use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError;
        let err = |status: u16, body: &'static str| {
            SdkError::service_error(
                CompleteMultipartUploadError::generic(
                    aws_sdk_s3::error::ErrorMetadata::builder().build(),
                ),
                HttpResponse::new(
                    status.try_into().unwrap(),
                    aws_sdk_s3::primitives::SdkBody::from(body),
                ),
            )
        };
        let moto = "<CompleteMultipartUploadResponse><Key>k</Key><ETag>\"x-2\"</ETag></CompleteMultipartUploadResponse>";
        assert!(confirmed_despite_parse_error(&err(200, moto)));
        assert!(!confirmed_despite_parse_error(&err(500, moto)));
        assert!(!confirmed_despite_parse_error(&err(
            200,
            "<Error><Code>InternalError</Code><ETag>x</ETag></Error>"
        )));
    }

    #[test]
    fn local_endpoints_default_to_path_style() {
        assert!(endpoint_is_local_or_ip("http://127.0.0.1:9000"));
        assert!(endpoint_is_local_or_ip("http://localhost:9000/"));
        assert!(endpoint_is_local_or_ip("http://[::1]:9000"));
        assert!(!endpoint_is_local_or_ip(
            "https://s3.eu-west-1.amazonaws.com"
        ));
    }
}
