//! The `s3://bucket/prefix?option=value` location, parsed as a URL, and the
//! SDK client it configures (region, endpoint, path style, retries).

use super::*;

/// A parsed `s3://` repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix of the repository: empty, or ending with `/`.
    pub prefix: String,
    /// `endpoint=`; `None` means the environment or AWS itself.
    pub endpoint: Option<String>,
    /// `region=`; `None` means the environment, the profile, then us-east-1.
    pub region: Option<String>,
    /// `path_style=` / `force_path_style=`; `None` means path style for an
    /// endpoint given as an IP address or `localhost`, virtual-host otherwise.
    pub path_style: Option<bool>,
    /// Base part size of multipart uploads (`part_size=`); objects smaller
    /// than this go up in one PUT.
    pub part_size: usize,
}

impl S3Options {
    /// Parse what follows `s3://`: `bucket[/prefix][?key=value&…]`, as a
    /// URL: the prefix and the parameters' values may be percent-encoded.
    pub fn parse(rest: &str) -> Result<S3Options, String> {
        let url = url::Url::parse(&format!("s3://{rest}"))
            .map_err(|e| format!("invalid location s3://{rest}: {e}"))?;
        let bucket = url.host_str().unwrap_or("");
        if bucket.is_empty() {
            return Err("missing bucket name (use s3://bucket/prefix)".into());
        }
        if let Some(c) = bucket
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(format!("bucket name {bucket:?} contains {c:?}"));
        }
        if url.port().is_some() || !url.username().is_empty() || url.fragment().is_some() {
            return Err("use s3://bucket/prefix?option=value (no port, user or fragment)".into());
        }
        let prefix = decode_prefix(url.path())?;
        let mut opts = S3Options {
            bucket: bucket.to_string(),
            prefix,
            endpoint: None,
            region: None,
            path_style: None,
            part_size: DEFAULT_PART_SIZE,
        };
        for (name, value) in url.query_pairs() {
            let value = value.into_owned();
            match &*name {
                "endpoint" => {
                    if !(value.starts_with("http://") || value.starts_with("https://")) {
                        return Err(format!(
                            "endpoint {value:?} must start with http:// or https://"
                        ));
                    }
                    opts.endpoint = Some(value.trim_end_matches('/').to_string());
                }
                "region" => {
                    if value.is_empty() {
                        return Err("region is empty".into());
                    }
                    opts.region = Some(value);
                }
                "path_style" | "force_path_style" => {
                    opts.path_style = Some(parse_bool(&name, &value)?);
                }
                "part_size" => opts.part_size = parse_part_size(&value)?,
                other => {
                    return Err(format!(
                        "unknown option {other:?} (known: endpoint, region, path_style, part_size)"
                    ))
                }
            }
        }
        Ok(opts)
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }

    /// Build an SDK client for these options without talking to the store
    /// (`S3::connect` checks the bucket). Used by `connect` and by test setup
    /// that must create buckets.
    pub async fn client(&self) -> Client {
        self.client_and_credentials().await.0
    }

    /// The client and the credentials provider it was configured with.
    pub(super) async fn client_and_credentials(
        &self,
    ) -> (
        Client,
        Option<aws_sdk_s3::config::SharedCredentialsProvider>,
    ) {
        // The SDK is built without its default HTTP client (two TLS stacks);
        // without this explicit one every request fails at run time.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let region = match &self.region {
            Some(r) => Region::new(r.clone()),
            None => aws_config::meta::region::RegionProviderChain::first_try(
                aws_config::environment::region::EnvironmentVariableRegionProvider::new(),
            )
            .or_else(aws_config::profile::ProfileFileRegionProvider::new())
            .or_else(Region::new(DEFAULT_REGION))
            .region()
            .await
            .unwrap_or_else(|| Region::new(DEFAULT_REGION)),
        };
        let endpoint = self.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        });
        let path_style = self
            .path_style
            .unwrap_or_else(|| endpoint.as_deref().is_some_and(endpoint_is_local_or_ip));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(region)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(e) = &endpoint {
            loader = loader.endpoint_url(e);
        }
        let sdk = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(path_style)
            .interceptor(RetryCounter)
            .build();
        (Client::from_conf(conf), sdk.credentials_provider())
    }
}

/// The key prefix of a location from its URL path (percent-decoded):
/// empty, or ending with `/`; no empty segments. Shared by every cloud
/// location (`s3://`, `az://`, `gs://`).
pub(crate) fn decode_prefix(path: &str) -> Result<String, String> {
    let prefix = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| format!("prefix {path:?} is not UTF-8"))?;
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(str::is_empty) && !prefix.is_empty() {
        return Err(format!("prefix {prefix:?} has an empty path segment"));
    }
    Ok(if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    })
}

pub(super) fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{name}={value:?}: use true or false")),
    }
}

/// `8388608`, `8MiB`, `8M`, `16MB`, `1GiB`: sizes as every flag takes them.
pub(super) fn parse_part_size(value: &str) -> Result<usize, String> {
    let n = crate::units::parse_size(value).map_err(|e| format!("part_size: {e}"))?;
    let size = Some(n)
        .filter(|s| (MIN_PART_SIZE as u64..=MAX_PART_SIZE as u64).contains(s))
        .ok_or_else(|| format!("part_size={value:?}: must be between 5MiB and 5GiB"))?;
    Ok(size as usize)
}

pub(super) fn endpoint_is_local_or_ip(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        return v6.contains(']');
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Counts every attempt of an operation into `storage::requests` by kind,
/// and the SDK's retries into `storage::RETRIES`: every attempt after the
/// first of an operation.
#[derive(Debug)]
struct RetryCounter;

#[derive(Debug, Clone)]
struct Attempts(u32);

impl aws_smithy_types::config_bag::Storable for Attempts {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl aws_sdk_s3::config::Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "pgtide retry counter"
    }

    fn read_before_attempt(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        // Every attempt is a request the store bills, retries included.
        let req = context.request();
        let (path, query) = req.uri().split_once('?').unwrap_or((req.uri(), ""));
        crate::storage::requests::count(crate::storage::requests::classify_http(
            req.method(),
            path,
            query,
        ));
        let n = cfg.load::<Attempts>().map_or(0, |a| a.0) + 1;
        if n > 1 {
            crate::storage::RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        cfg.interceptor_state().store_put(Attempts(n));
        Ok(())
    }
}
