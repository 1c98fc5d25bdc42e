//! The `az://container/prefix?account=…` location, and where its account,
//! endpoint and credentials come from: the URL, then
//! `AZURE_STORAGE_CONNECTION_STRING` (what Azurite users set), then the
//! variables object_store reads (`AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`, `AZURE_CLIENT_ID`
//! with `AZURE_CLIENT_SECRET` and `AZURE_TENANT_ID`,
//! `AZURE_FEDERATED_TOKEN_FILE`; else managed identity).

use super::*;

/// A parsed `az://` repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureOptions {
    pub container: String,
    /// Blob name prefix of the repository: empty, or ending with `/`.
    pub prefix: String,
    /// `account=`; `None` means the connection string or the environment.
    pub account: Option<String>,
    /// `endpoint=`: the blob service URL (`https://acct.blob.core.windows.net`,
    /// `http://127.0.0.1:10000/devstoreaccount1`).
    pub endpoint: Option<String>,
    /// Base block size of staged uploads (`block_size=`); smaller objects
    /// go up in one Put Blob.
    pub block_size: usize,
}

impl AzureOptions {
    /// Parse what follows `az://`: `container[/prefix][?key=value&…]`.
    pub fn parse(rest: &str) -> Result<AzureOptions, String> {
        let url = url::Url::parse(&format!("az://{rest}"))
            .map_err(|e| format!("invalid location az://{rest}: {e}"))?;
        let container = url.host_str().unwrap_or("");
        if container.is_empty() {
            return Err("missing container name (use az://container/prefix?account=NAME)".into());
        }
        if container.len() < 3
            || container.len() > 63
            || container
                .chars()
                .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(format!(
                "container name {container:?}: use 3 to 63 lowercase letters, digits and hyphens"
            ));
        }
        if url.port().is_some() || !url.username().is_empty() || url.fragment().is_some() {
            return Err(
                "use az://container/prefix?option=value (no port, user or fragment)".into(),
            );
        }
        let prefix = crate::storage::s3::decode_prefix(url.path())?;
        let mut opts = AzureOptions {
            container: container.to_string(),
            prefix,
            account: None,
            endpoint: None,
            block_size: DEFAULT_BLOCK_SIZE,
        };
        for (name, value) in url.query_pairs() {
            let value = value.into_owned();
            match &*name {
                "account" => {
                    if value.is_empty()
                        || !value
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    {
                        return Err(format!(
                            "account={value:?}: use the storage account name (lowercase letters and digits)"
                        ));
                    }
                    opts.account = Some(value);
                }
                "endpoint" => opts.endpoint = Some(cloud::parse_endpoint(&value)?),
                "block_size" => {
                    opts.block_size = cloud::parse_size_option(
                        "block_size",
                        &value,
                        MIN_BLOCK_SIZE as u64,
                        MAX_BLOCK_SIZE as u64,
                    )?
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} (known: account, endpoint, block_size)"
                    ))
                }
            }
        }
        Ok(opts)
    }

    /// `az://container/prefix`, for messages.
    pub fn location(&self) -> String {
        format!("az://{}/{}", self.container, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }
}

/// The parts of `AZURE_STORAGE_CONNECTION_STRING` pgtide uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ConnectionString {
    pub(super) account: Option<String>,
    pub(super) key: Option<String>,
    pub(super) sas: Option<String>,
    pub(super) blob_endpoint: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) suffix: Option<String>,
}

/// The account and key of the storage emulator (Azurite), published by
/// Microsoft; `UseDevelopmentStorage=true` means them.
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl ConnectionString {
    /// `Key=Value;Key=Value` (values may contain `=`).
    pub(super) fn parse(s: &str) -> Result<ConnectionString, String> {
        let mut c = ConnectionString::default();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("AZURE_STORAGE_CONNECTION_STRING: {part:?} is not Key=Value")
            })?;
            let v = v.trim().to_string();
            match k.trim() {
                "AccountName" => c.account = Some(v),
                "AccountKey" => c.key = Some(v),
                "SharedAccessSignature" => c.sas = Some(v),
                "BlobEndpoint" => c.blob_endpoint = Some(cloud::parse_endpoint(&v)?),
                "DefaultEndpointsProtocol" => c.protocol = Some(v),
                "EndpointSuffix" => c.suffix = Some(v),
                "UseDevelopmentStorage" if v.eq_ignore_ascii_case("true") => {
                    c.account = Some(DEV_ACCOUNT.into());
                    c.key = Some(DEV_KEY.into());
                    c.blob_endpoint = Some(format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
                }
                // QueueEndpoint, TableEndpoint, …: not ours.
                _ => {}
            }
        }
        Ok(c)
    }

    /// The blob endpoint it names, directly or by protocol and suffix.
    pub(super) fn endpoint(&self) -> Option<String> {
        if let Some(e) = &self.blob_endpoint {
            return Some(e.clone());
        }
        let account = self.account.as_ref()?;
        let suffix = self.suffix.as_ref()?;
        let protocol = self.protocol.as_deref().unwrap_or("https");
        Some(format!("{protocol}://{account}.blob.{suffix}"))
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Account, endpoint and credentials resolved; the object_store handle
/// whose credential provider signs our requests.
pub(super) struct Resolved {
    pub(super) account: String,
    pub(super) endpoint: url::Url,
    pub(super) store: object_store::azure::MicrosoftAzure,
}

pub(super) fn resolve(opts: &AzureOptions, http: &cloud::Http) -> Result<Resolved, StorageError> {
    let bad = |reason: String| StorageError::BadUrl {
        url: opts.location(),
        reason,
    };
    let conn = match env("AZURE_STORAGE_CONNECTION_STRING") {
        Some(s) => ConnectionString::parse(&s).map_err(bad)?,
        None => ConnectionString::default(),
    };
    let account = opts
        .account
        .clone()
        .or_else(|| conn.account.clone())
        .or_else(|| env("AZURE_STORAGE_ACCOUNT_NAME"))
        .or_else(|| env("AZURE_STORAGE_ACCOUNT"))
        .ok_or_else(|| {
            bad(
                "no storage account: add ?account=NAME, or set AZURE_STORAGE_CONNECTION_STRING"
                    .into(),
            )
        })?;
    if let (Some(a), Some(c)) = (&opts.account, &conn.account) {
        if a != c {
            return Err(bad(format!(
                "account={a} but AZURE_STORAGE_CONNECTION_STRING is for account {c}"
            )));
        }
    }
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| conn.endpoint())
        .or_else(|| env("AZURE_STORAGE_ENDPOINT"))
        .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
    let endpoint =
        url::Url::parse(&endpoint).map_err(|e| bad(format!("endpoint {endpoint:?}: {e}")))?;
    let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
        .with_account(&account)
        .with_container_name(&opts.container)
        .with_endpoint(endpoint.to_string())
        .with_allow_http(true)
        .with_http_connector(http.connector());
    if let Some(k) = &conn.key {
        b = b.with_access_key(k);
    } else if let Some(sas) = &conn.sas {
        let pairs = object_store::azure::split_sas(sas)
            .map_err(|e| bad(format!("SharedAccessSignature: {e}")))?;
        b = b.with_sas_authorization(pairs);
    }
    let store = b.build().map_err(|e| StorageError::AccessDenied {
        what: format!(
            "{} (Azure credentials: {})",
            opts.location(),
            cloud::error_chain(&e)
        ),
    })?;
    Ok(Resolved {
        account,
        endpoint,
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let o = AzureOptions::parse("backups/db1/main?account=acct1&block_size=16MiB").unwrap();
        assert_eq!(o.container, "backups");
        assert_eq!(o.prefix, "db1/main/");
        assert_eq!(o.account.as_deref(), Some("acct1"));
        assert_eq!(o.block_size, 16 << 20);
        assert_eq!(o.location(), "az://backups/db1/main");
        let o = AzureOptions::parse("backups?endpoint=http://127.0.0.1:10000/devstoreaccount1/")
            .unwrap();
        assert_eq!(o.prefix, "");
        assert_eq!(
            o.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        for bad in [
            "",
            "Backups/x",
            "ab/x",
            "backups/x?acount=a",
            "backups/x?account=A",
            "backups/x?endpoint=ftp://h",
            "backups/x?block_size=1k",
            "backups/x//y",
        ] {
            assert!(AzureOptions::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_strings() {
        let c = ConnectionString::parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(c.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(c.key.as_deref(), Some("a2V5=="));
        assert_eq!(
            c.endpoint().as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        let c = ConnectionString::parse(
            "DefaultEndpointsProtocol=https;AccountName=acct;SharedAccessSignature=sv=2022&sig=abc%3D;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(c.sas.as_deref(), Some("sv=2022&sig=abc%3D"));
        assert_eq!(
            c.endpoint().as_deref(),
            Some("https://acct.blob.core.windows.net")
        );
        let c = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(c.account.as_deref(), Some(DEV_ACCOUNT));
        assert!(ConnectionString::parse("AccountName").is_err());
    }
}
