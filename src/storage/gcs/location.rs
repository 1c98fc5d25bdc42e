//! The `gs://bucket/prefix?…` location, and where its endpoint and
//! credentials come from: `endpoint=`, else `STORAGE_EMULATOR_HOST` (an
//! emulator: no credentials, as Google's SDKs do), else the service; the
//! credentials are Application Default Credentials, resolved by object_store.

use super::*;

/// A parsed `gs://` repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsOptions {
    pub bucket: String,
    /// Object name prefix of the repository: empty, or ending with `/`.
    pub prefix: String,
    /// `endpoint=`: a private endpoint or an emulator (`http://127.0.0.1:4443`).
    pub endpoint: Option<String>,
    /// Chunk size of resumable uploads (`chunk_size=`, a multiple of
    /// 256 KiB); smaller objects go up in one request.
    pub chunk_size: usize,
}

/// The service's own endpoint.
const GCS_ENDPOINT: &str = "https://storage.googleapis.com";

impl GcsOptions {
    /// Parse what follows `gs://`: `bucket[/prefix][?key=value&…]`.
    pub fn parse(rest: &str) -> Result<GcsOptions, String> {
        let url = url::Url::parse(&format!("gs://{rest}"))
            .map_err(|e| format!("invalid location gs://{rest}: {e}"))?;
        let bucket = url.host_str().unwrap_or("");
        if bucket.is_empty() {
            return Err("missing bucket name (use gs://bucket/prefix)".into());
        }
        if let Some(c) = bucket.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(format!("bucket name {bucket:?} contains {c:?}"));
        }
        if url.port().is_some() || !url.username().is_empty() || url.fragment().is_some() {
            return Err("use gs://bucket/prefix?option=value (no port, user or fragment)".into());
        }
        let prefix = crate::storage::s3::decode_prefix(url.path())?;
        let mut opts = GcsOptions {
            bucket: bucket.to_string(),
            prefix,
            endpoint: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
        };
        for (name, value) in url.query_pairs() {
            let value = value.into_owned();
            match &*name {
                "endpoint" => opts.endpoint = Some(cloud::parse_endpoint(&value)?),
                "chunk_size" => {
                    let n = cloud::parse_size_option(
                        "chunk_size",
                        &value,
                        MIN_CHUNK_SIZE as u64,
                        MAX_CHUNK_SIZE as u64,
                    )?;
                    if n % CHUNK_GRANULE != 0 {
                        return Err(format!(
                            "chunk_size={value:?}: must be a multiple of 256KiB"
                        ));
                    }
                    opts.chunk_size = n;
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} (known: endpoint, chunk_size)"
                    ))
                }
            }
        }
        Ok(opts)
    }

    /// `gs://bucket/prefix`, for messages.
    pub fn location(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }
}

/// `STORAGE_EMULATOR_HOST` as a URL: `host:port` means `http://host:port`.
fn emulator_host() -> Option<String> {
    let v = std::env::var("STORAGE_EMULATOR_HOST").ok()?;
    let v = v.trim().trim_end_matches('/');
    if v.is_empty() {
        return None;
    }
    Some(if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    })
}

/// The endpoint, and the credentials (`None` for an emulator).
pub(super) fn resolve(
    opts: &GcsOptions,
    http: &cloud::Http,
) -> Result<(String, Option<object_store::gcp::GcpCredentialProvider>), StorageError> {
    let emulator = emulator_host();
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| emulator.clone())
        .unwrap_or_else(|| GCS_ENDPOINT.to_string());
    if emulator.is_some() {
        return Ok((endpoint, None));
    }
    let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(&opts.bucket)
        .with_http_connector(http.connector())
        .build()
        .map_err(|e| StorageError::AccessDenied {
            what: format!(
                "{} (Google credentials: {})",
                opts.location(),
                cloud::error_chain(&e)
            ),
        })?;
    Ok((endpoint, Some(store.credentials().clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let o = GcsOptions::parse("dr-bucket/db1?chunk_size=16MiB").unwrap();
        assert_eq!(o.bucket, "dr-bucket");
        assert_eq!(o.prefix, "db1/");
        assert_eq!(o.chunk_size, 16 << 20);
        assert_eq!(o.location(), "gs://dr-bucket/db1");
        let o = GcsOptions::parse("b?endpoint=http://127.0.0.1:4443").unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:4443"));
        for bad in [
            "",
            "Bucket/x",
            "b/x?chunk_size=300KiB",
            "b/x?chunk_size=1KiB",
            "b/x?region=x",
            "b/x//y",
        ] {
            assert!(GcsOptions::parse(bad).is_err(), "{bad}");
        }
    }
}
