//! `--object-lock` on Azure: version-level immutability (WORM). The
//! container check (Get Container Properties), the policy put on every blob
//! written (`x-ms-immutability-policy-until-date` and `-mode` on Put Blob and
//! Put Block List), reading a blob's policy date (Get Blob Properties), and
//! deleting by version. A container with version-level immutability is
//! versioned: a Delete Blob without a version id only turns the current
//! version into a previous one (kept, and billed), so handles of a
//! repository with Object Lock delete every version of a key instead, and
//! report a version still under its policy (or a legal hold) as `Retained`.
//! It never asks to shorten, delete or bypass a policy.
//!
//! The parsers here are pure (`container_worm`, `http_date`/`parse_http_date`,
//! the version listing), unit-tested against answers captured from the REST
//! documentation.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::*;
use crate::storage::group_prefixes;
use crate::storage::{Retention, RetentionMode};

const UNTIL: &str = "x-ms-immutability-policy-until-date";
const MODE: &str = "x-ms-immutability-policy-mode";
const LEGAL_HOLD: &str = "x-ms-legal-hold";

/// Error codes of a version or blob that cannot be deleted (or overwritten,
/// with container-level WORM) yet: a time-based policy or a legal hold.
pub(super) const IMMUTABLE_CODES: &[&str] = &[
    "BlobImmutableDueToPolicy",
    "BlobImmutableDueToLegalHold",
    "ContainerImmutabilityPolicyLocked",
    "ContainerHasLegalHold",
];

/// The policy mode of `mode`: governance is an unlocked policy (whoever may
/// change immutability policies can still shorten or delete it), compliance
/// a locked one (nobody can, until the date).
pub(super) fn policy_mode(mode: RetentionMode) -> &'static str {
    match mode {
        RetentionMode::Governance => "Unlocked",
        RetentionMode::Compliance => "Locked",
    }
}

/// RFC 1123, the only date form the immutability headers take
/// (`Sun, 20 Dec 2026 03:00:00 GMT`).
pub(super) fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// An RFC 1123 date as the service sends it back.
pub(super) fn parse_http_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The headers of a write whose blob gets the policy `r`, from `now`.
pub(super) fn policy_headers(r: &Retention, now: DateTime<Utc>) -> [(&'static str, String); 2] {
    [
        (UNTIL, http_date(r.until(now))),
        (MODE, policy_mode(r.mode).to_string()),
    ]
}

/// What Get Container Properties says about immutability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContainerWorm {
    /// Version-level immutability enabled, no container policy or hold.
    Enabled,
    /// `x-ms-immutable-storage-with-versioning-enabled: false`.
    NotEnabled,
    /// A container-level (or default) time-based policy.
    ContainerPolicy,
    /// A legal hold on the container.
    ContainerLegalHold,
    /// The answer has no `x-ms-immutable-storage-with-versioning-enabled`
    /// (an emulator: Azurite 3.x does not implement immutability).
    NotReported,
}

fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Classify the container from its `x-ms-immutable-storage-with-versioning-enabled`,
/// `x-ms-has-immutability-policy` and `x-ms-has-legal-hold` headers.
pub(super) fn container_worm(
    versioning_enabled: Option<&str>,
    has_policy: Option<&str>,
    has_legal_hold: Option<&str>,
) -> ContainerWorm {
    match versioning_enabled {
        None => ContainerWorm::NotReported,
        Some(_) if !is_true(versioning_enabled) => ContainerWorm::NotEnabled,
        Some(_) if is_true(has_legal_hold) => ContainerWorm::ContainerLegalHold,
        Some(_) if is_true(has_policy) => ContainerWorm::ContainerPolicy,
        Some(_) => ContainerWorm::Enabled,
    }
}

/// The policy of a blob (version) from Get Blob Properties: its
/// until-date when it has a policy (a mode other than `Mutable`), and
/// whether a legal hold is on it.
pub(super) fn blob_policy(
    mode: Option<&str>,
    until: Option<&str>,
    legal_hold: Option<&str>,
) -> (Option<DateTime<Utc>>, bool) {
    let has_policy = mode.is_some_and(|m| !m.trim().eq_ignore_ascii_case("mutable"));
    let until = until.filter(|_| has_policy).and_then(parse_http_date);
    (until, is_true(legal_hold))
}

/// Why a write carrying a policy failed, when it is because the store or
/// the container cannot keep one: a store without the operation (501), or
/// an answer about the immutability headers that is not "this blob is
/// immutable" (the container lacks version-level immutability support).
pub(super) fn refusal(status: u16, code: &str, body: &str, container: &str) -> Option<String> {
    let body = body.to_ascii_lowercase();
    let about_policy = code.to_ascii_lowercase().contains("immutab")
        || body.contains("x-ms-immutability-policy")
        || body.contains("immutable storage");
    if status == 501 || matches!(code, "NotImplemented" | "APINotImplemented") {
        Some(format!(
            "the store does not implement immutability policies (HTTP {status} {code})"
        ))
    } else if matches!(status, 400 | 409) && about_policy && !IMMUTABLE_CODES.contains(&code) {
        Some(format!(
            "container {container} refused the immutability policy of a blob (HTTP {status} \
             {code}): enable version-level immutability support on the container"
        ))
    } else {
        None
    }
}

/// [`blob_policy`] of a Get Blob Properties answer.
pub(super) fn policy_in(resp: &Response) -> (Option<DateTime<Utc>>, bool) {
    blob_policy(
        resp.header(MODE),
        resp.header(UNTIL),
        resp.header(LEGAL_HOLD),
    )
}

/// A List Blobs answer with `include=versions`: one entry per version.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct VersionList {
    #[serde(default)]
    blobs: VersionBlobs,
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct VersionBlobs {
    #[serde(rename = "Blob", default)]
    blob: Vec<VersionEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct VersionEntry {
    pub(super) name: String,
    /// Absent for a blob written before versioning was enabled (and on
    /// stores without versioning).
    #[serde(default)]
    pub(super) version_id: Option<String>,
    #[serde(default)]
    pub(super) is_current_version: Option<bool>,
    /// With `include=immutabilitypolicy,legalhold`: the version's policy.
    #[serde(default)]
    pub(super) properties: VersionProperties,
}

/// The properties of a listed version that say whether it may go.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub(super) struct VersionProperties {
    #[serde(rename = "ImmutabilityPolicyUntilDate", default)]
    pub(super) until: Option<String>,
    #[serde(rename = "ImmutabilityPolicyMode", default)]
    pub(super) mode: Option<String>,
    #[serde(rename = "LegalHold", default)]
    pub(super) legal_hold: Option<String>,
}

impl VersionEntry {
    /// `Some` when the version cannot be deleted at `now`: under a policy
    /// until a later date (`Some(date)`), or a legal hold (`None`).
    fn held_at(&self, now: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
        let p = &self.properties;
        let (until, hold) = blob_policy(
            p.mode.as_deref(),
            p.until.as_deref(),
            p.legal_hold.as_deref(),
        );
        if hold {
            return Some(None);
        }
        until.filter(|t| *t > now).map(Some)
    }

    /// The base blob (what a Delete Blob without a version id removes):
    /// the current version, or a blob without versions.
    fn is_base(&self) -> bool {
        self.version_id.is_none() || self.is_current_version == Some(true)
    }
}

impl VersionList {
    pub(super) fn parse(xml: &str) -> Result<VersionList, String> {
        quick_xml::de::from_str(xml).map_err(|e| e.to_string())
    }
}

/// One Delete Blob to send: the base blob (`None`) or one version.
type Target = (String, Option<String>);

impl Inner {
    /// Get Container Properties: version-level immutability enabled, and no
    /// container-level policy or legal hold.
    pub(super) async fn check_immutability(&self) -> Result<(), StorageError> {
        let unsupported = |reason: String| StorageError::RetentionUnsupported {
            location: self.location.clone(),
            reason,
        };
        let mut url = self.container_url();
        url.query_pairs_mut().append_pair("restype", "container");
        let resp = self
            .send(
                "read the properties of",
                "",
                http::Method::HEAD,
                &url,
                &[],
                Bytes::new(),
            )
            .await?;
        if !resp.ok() {
            let code = resp.header("x-ms-error-code");
            if resp.status == 501 || matches!(code, Some("NotImplemented" | "APINotImplemented")) {
                return Err(unsupported(format!(
                    "the store does not implement Get Container Properties (HTTP {}{})",
                    resp.status,
                    code.map(|c| format!(" {c}")).unwrap_or_default()
                )));
            }
            return Err(self.error("read the properties of", "", &resp));
        }
        let c = &self.container;
        let locks = "which would also lock the objects pgtide removes by design (its writer lock, \
                     deletion markers, WAL pieces and partials, the WAL index)";
        match container_worm(
            resp.header("x-ms-immutable-storage-with-versioning-enabled"),
            resp.header("x-ms-has-immutability-policy"),
            resp.header("x-ms-has-legal-hold"),
        ) {
            ContainerWorm::Enabled => Ok(()),
            ContainerWorm::NotEnabled => Err(unsupported(format!(
                "container {c} does not have version-level immutability enabled (enable \
                 version-level immutability support on the container, which needs blob \
                 versioning on the storage account)"
            ))),
            ContainerWorm::ContainerPolicy => Err(unsupported(format!(
                "container {c} has a container-level immutability policy, {locks}: remove the \
                 policy; pgtide puts the policy on each blob it keeps"
            ))),
            ContainerWorm::ContainerLegalHold => Err(unsupported(format!(
                "container {c} has a legal hold, {locks}: clear the hold; pgtide puts the policy \
                 on each blob it keeps"
            ))),
            ContainerWorm::NotReported => Err(unsupported(format!(
                "the store does not report version-level immutability for container {c} (no \
                 x-ms-immutable-storage-with-versioning-enabled in its properties; emulators \
                 such as Azurite do not implement immutability)"
            ))),
        }
    }

    /// Get Blob Properties of `key` (its version `version`, if given): the
    /// policy's until-date, and whether a legal hold is on it.
    pub(super) async fn policy_of(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<(Option<DateTime<Utc>>, bool), StorageError> {
        Ok(policy_in(&self.stat(key, version).await?))
    }

    /// Set Blob Immutability Policy on `key` (its version `version`, if
    /// known): for a blob the store committed without the policy asked.
    pub(super) async fn set_policy(
        &self,
        key: &str,
        version: Option<&str>,
        mode: RetentionMode,
        until: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let mut url = self.blob_url(key);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("comp", "immutabilityPolicies");
            if let Some(v) = version {
                q.append_pair("versionid", v);
            }
        }
        let headers = [
            (UNTIL, http_date(until)),
            (MODE, policy_mode(mode).to_string()),
        ];
        let op = "set the immutability policy of";
        let resp = self
            .send(op, key, http::Method::PUT, &url, &headers, Bytes::new())
            .await?;
        if resp.ok() {
            return Ok(());
        }
        Err(self
            .policy_refused(&resp)
            .unwrap_or_else(|| self.error(op, key, &resp)))
    }

    /// A write carrying a policy was refused because the store or the
    /// container cannot keep one (`RetentionUnsupported`); `None` for any
    /// other failure.
    pub(super) fn policy_refused(&self, resp: &Response) -> Option<StorageError> {
        let reason = refusal(
            resp.status,
            resp.header("x-ms-error-code").unwrap_or(""),
            &resp.body_text(),
            &self.container,
        )?;
        Some(StorageError::RetentionUnsupported {
            location: self.location.clone(),
            reason,
        })
    }

    /// The error of a failed write that carried a policy: `policy_refused`,
    /// or access denied with what setting a policy needs, or `error`.
    pub(super) fn policy_write_error(
        &self,
        op: &'static str,
        key: &str,
        resp: &Response,
    ) -> StorageError {
        if let Some(e) = self.policy_refused(resp) {
            return e;
        }
        match self.error(op, key, resp) {
            StorageError::AccessDenied { what } => StorageError::AccessDenied {
                what: format!(
                    "{what}; writing with an immutability policy also needs the SAS permission i \
                     or a role allowed to set immutability policies"
                ),
            },
            e => e,
        }
    }

    /// Every version of `keys` (relative), by key: one listing per group of
    /// keys that share a parent.
    async fn versions_of(
        &self,
        keys: &[String],
    ) -> Result<BTreeMap<String, Vec<VersionEntry>>, StorageError> {
        let wanted: BTreeSet<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let mut out: BTreeMap<String, Vec<VersionEntry>> = BTreeMap::new();
        for prefix in group_prefixes(wanted.iter().map(String::as_str)) {
            let rel = prefix.strip_prefix(&self.prefix).unwrap_or(&prefix);
            let mut marker: Option<String> = None;
            loop {
                let mut url = self.container_url();
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("restype", "container")
                        .append_pair("comp", "list")
                        .append_pair("include", "versions,immutabilitypolicy,legalhold")
                        .append_pair("prefix", &prefix)
                        .append_pair("maxresults", "5000");
                    if let Some(m) = &marker {
                        q.append_pair("marker", m);
                    }
                }
                let op = "list the versions of";
                let resp = self
                    .send(op, rel, http::Method::GET, &url, &[], Bytes::new())
                    .await?;
                if !resp.ok() {
                    return Err(self.error(op, rel, &resp));
                }
                let page =
                    VersionList::parse(&String::from_utf8_lossy(&resp.body)).map_err(|e| {
                        service(op, rel, format!("unreadable List Blobs answer: {e}"), true)
                    })?;
                for v in page.blobs.blob {
                    if wanted.contains(&v.name) {
                        let k = v.name.strip_prefix(&self.prefix).unwrap_or(&v.name);
                        out.entry(k.to_string()).or_default().push(v);
                    }
                }
                match page.next_marker.filter(|m| !m.is_empty()) {
                    Some(m) => marker = Some(m),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Delete Blob on each of `targets`, `DELETES_IN_FLIGHT` at a time; the
    /// result of each, in order. Missing blobs and versions are fine.
    async fn delete_targets(
        self: &Arc<Self>,
        targets: Vec<Target>,
    ) -> Vec<(Target, Result<(), StorageError>)> {
        futures::stream::iter(targets.into_iter().map(|t| {
            let az = self.clone();
            async move {
                let r = az.delete_version(&t.0, t.1.as_deref()).await;
                (t, r)
            }
        }))
        .buffered(DELETES_IN_FLIGHT)
        .collect()
        .await
    }

    /// Delete Blob of `key`, or of its version `version`.
    async fn delete_version(&self, key: &str, version: Option<&str>) -> Result<(), StorageError> {
        let Some(v) = version else {
            return self.delete_one(key).await;
        };
        let mut url = self.blob_url(key);
        url.query_pairs_mut().append_pair("versionid", v);
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

    /// Delete every version of `keys`: first each base blob (the current
    /// version becomes a previous one; the service refuses to delete the
    /// current version by its id, `OperationNotAllowedOnRootBlob`), then
    /// each version by id. A key whose current version is under its policy
    /// or a legal hold is left whole (its base blob is not deleted, which
    /// would hide it while the version stays); any version the service
    /// refuses stays too. `Retained` (with its date) for the first such key,
    /// after every other deletion was tried.
    pub(super) async fn delete_versions(
        self: &Arc<Self>,
        keys: &[String],
    ) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let versions = self.versions_of(keys).await?;
        let mut retained: Vec<(String, Option<DateTime<Utc>>)> = Vec::new();
        let mut kept_whole: BTreeSet<String> = BTreeSet::new();
        for (k, vs) in &versions {
            if let Some(until) = vs.iter().find(|v| v.is_base()).and_then(|v| v.held_at(now)) {
                retained.push((k.clone(), until));
                kept_whole.insert(k.clone());
            }
        }
        let bases: Vec<Target> = versions
            .iter()
            .filter(|(k, vs)| !kept_whole.contains(*k) && vs.iter().any(VersionEntry::is_base))
            .map(|(k, _)| (k.clone(), None))
            .collect();
        let mut results = self.delete_targets(bases).await;
        let base_failed: BTreeSet<String> = results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|((k, _), _)| k.clone())
            .chain(kept_whole)
            .collect();
        // A current version whose base was not deleted is still current.
        let ids: Vec<Target> = versions
            .into_iter()
            .flat_map(|(k, vs)| {
                let skip_current = base_failed.contains(&k);
                vs.into_iter()
                    .filter(move |v| !(skip_current && v.is_current_version == Some(true)))
                    .filter_map(|v| v.version_id)
                    .map(move |id| (k.clone(), Some(id)))
                    .collect::<Vec<_>>()
            })
            .collect();
        results.extend(self.delete_targets(ids).await);
        if let Some((key, until)) = retained.into_iter().next() {
            return Err(StorageError::Retained { key, until });
        }
        let failed: Vec<_> = results
            .into_iter()
            .filter_map(|(t, r)| r.err().map(|e| (t, e)))
            .collect();
        let first_retained = failed
            .iter()
            .position(|(_, e)| matches!(e, StorageError::Retained { .. }));
        let Some(((key, version), e)) = failed.into_iter().nth(first_retained.unwrap_or(0)) else {
            return Ok(());
        };
        match e {
            // The date read back; a legal hold has none.
            StorageError::Retained { .. } => {
                let until = match self.policy_of(&key, version.as_deref()).await {
                    Ok((until, false)) => until,
                    _ => None,
                };
                Err(StorageError::Retained { key, until })
            }
            e => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn policy_headers_for_both_modes() {
        let r = Retention {
            mode: RetentionMode::Governance,
            period: std::time::Duration::from_secs(14 * 86_400),
        };
        let now = at("2026-12-06T03:00:00.250Z");
        assert_eq!(
            policy_headers(&r, now),
            [
                (UNTIL, "Sun, 20 Dec 2026 03:00:01 GMT".to_string()),
                (MODE, "Unlocked".to_string())
            ]
        );
        let c = Retention {
            mode: RetentionMode::Compliance,
            ..r
        };
        assert_eq!(policy_headers(&c, now)[1], (MODE, "Locked".to_string()));
        assert_eq!(
            http_date(at("2027-01-05T09:08:07Z")),
            "Tue, 05 Jan 2027 09:08:07 GMT"
        );
    }

    #[test]
    fn dates_round_trip() {
        let t = at("2026-12-20T03:00:07Z");
        assert_eq!(parse_http_date(&http_date(t)), Some(t));
        // As Get Blob Properties sends it.
        assert_eq!(
            parse_http_date("Mon, 28 Jun 2021 05:55:48 GMT"),
            Some(at("2021-06-28T05:55:48Z"))
        );
        assert_eq!(parse_http_date("2021-06-28T05:55:48Z"), None);
    }

    #[test]
    fn container_properties() {
        let t = Some("true");
        let f = Some("false");
        use ContainerWorm::*;
        assert_eq!(container_worm(t, f, f), Enabled);
        assert_eq!(container_worm(Some("True"), None, None), Enabled);
        assert_eq!(container_worm(f, f, f), NotEnabled);
        assert_eq!(container_worm(f, t, f), NotEnabled);
        assert_eq!(container_worm(t, t, f), ContainerPolicy);
        assert_eq!(container_worm(t, f, t), ContainerLegalHold);
        assert_eq!(container_worm(t, t, t), ContainerLegalHold);
        // Azurite 3.x: the two `has` headers (false), not the first one.
        assert_eq!(container_worm(None, f, f), NotReported);
    }

    #[test]
    fn blob_properties() {
        let until = Some("Mon, 28 Jun 2021 05:55:48 GMT");
        let t = at("2021-06-28T05:55:48Z");
        assert_eq!(blob_policy(Some("unlocked"), until, None), (Some(t), false));
        assert_eq!(
            blob_policy(Some("Locked"), until, Some("false")),
            (Some(t), false)
        );
        assert_eq!(
            blob_policy(Some("locked"), until, Some("true")),
            (Some(t), true)
        );
        assert_eq!(blob_policy(None, until, None), (None, false));
        assert_eq!(blob_policy(Some("Mutable"), until, None), (None, false));
        assert_eq!(blob_policy(None, None, Some("true")), (None, true));
        assert_eq!(
            blob_policy(Some("unlocked"), Some("soon"), None),
            (None, false)
        );
    }

    #[test]
    fn refused_policies() {
        assert_eq!(
            refusal(501, "APINotImplemented", "", "c").as_deref(),
            Some("the store does not implement immutability policies (HTTP 501 APINotImplemented)")
        );
        let bad_header = "<Error><Code>InvalidHeaderValue</Code><HeaderName>x-ms-immutability-policy-mode</HeaderName></Error>";
        assert_eq!(
            refusal(400, "InvalidHeaderValue", bad_header, "c").as_deref(),
            Some("container c refused the immutability policy of a blob (HTTP 400 InvalidHeaderValue): enable version-level immutability support on the container")
        );
        // Not about the policy, or "this blob is immutable": other errors.
        assert_eq!(refusal(409, "BlobAlreadyExists", "", "c"), None);
        assert_eq!(refusal(409, "BlobImmutableDueToPolicy", "", "c"), None);
        assert_eq!(
            refusal(400, "InvalidHeaderValue", "<HeaderName>x-ms-range", "c"),
            None
        );
        assert_eq!(refusal(503, "ServerBusy", "", "c"), None);
    }

    /// A driver for `az://c/p` that never talks to anything.
    fn offline() -> Inner {
        let http = cloud::Http::new();
        let store = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account("acct")
            .with_access_key("a2V5")
            .with_container_name("c")
            .with_http_connector(http.connector())
            .build()
            .unwrap();
        Inner {
            http,
            store,
            account: "acct".into(),
            endpoint: url::Url::parse("https://acct.blob.core.windows.net").unwrap(),
            container: "c".into(),
            prefix: "p/".into(),
            block_size: DEFAULT_BLOCK_SIZE,
            location: "az://c/p".into(),
        }
    }

    fn answer(status: u16, code: &str) -> Response {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-ms-error-code", code.parse().unwrap());
        Response {
            status,
            headers,
            body: Bytes::new(),
        }
    }

    #[test]
    fn immutability_errors_map_to_one_line_errors() {
        let az = offline();
        for code in IMMUTABLE_CODES {
            let e = az.error("delete", "wal/x", &answer(409, code));
            assert!(
                matches!(&e, StorageError::Retained { key, until: None } if key == "wal/x"),
                "{code}: {e:?}"
            );
            assert_eq!(
                e.to_string(),
                "object wal/x is under Object Lock retention: it cannot be deleted before then"
            );
        }
        // Only a delete means "still under retention".
        assert_eq!(
            az.error("upload", "wal/x", &answer(409, "BlobImmutableDueToPolicy"))
                .to_string(),
            "upload wal/x: BlobImmutableDueToPolicy (HTTP 409)"
        );
        assert_eq!(
            az.policy_refused(&answer(501, "APINotImplemented"))
                .unwrap()
                .to_string(),
            "Object Lock retention is not available on az://c/p: the store does not implement immutability policies (HTTP 501 APINotImplemented)"
        );
        assert!(az
            .policy_refused(&answer(409, "BlobAlreadyExists"))
            .is_none());
    }

    #[test]
    fn version_listing_parses() {
        // The shape of List Blobs with include=versions (REST docs), two
        // versions of one blob, a blob from before versioning, a prefix.
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="c">
  <Prefix>p/wal/</Prefix><MaxResults>5000</MaxResults>
  <Blobs>
    <Blob><Name>p/wal/a</Name><VersionId>2026-06-15T02:17:03.6740094Z</VersionId><Properties><Creation-Time>Mon, 15 Jun 2026 02:17:03 GMT</Creation-Time><Content-Length>11</Content-Length><ImmutabilityPolicyUntilDate>Mon, 29 Jun 2026 02:17:03 GMT</ImmutabilityPolicyUntilDate><ImmutabilityPolicyMode>unlocked</ImmutabilityPolicyMode></Properties></Blob>
    <Blob><Name>p/wal/a</Name><VersionId>2026-06-16T02:17:03.1234567Z</VersionId><IsCurrentVersion>true</IsCurrentVersion><Properties><Content-Length>12</Content-Length></Properties></Blob>
    <Blob><Name>p/wal/old</Name><Properties><Content-Length>3</Content-Length></Properties></Blob>
    <BlobPrefix><Name>p/wal/d/</Name></BlobPrefix>
  </Blobs>
  <NextMarker>2!96!abc</NextMarker>
</EnumerationResults>"#;
        let page = VersionList::parse(xml).unwrap();
        let v = &page.blobs.blob;
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0],
            VersionEntry {
                name: "p/wal/a".into(),
                version_id: Some("2026-06-15T02:17:03.6740094Z".into()),
                is_current_version: None,
                properties: VersionProperties {
                    until: Some("Mon, 29 Jun 2026 02:17:03 GMT".into()),
                    mode: Some("unlocked".into()),
                    legal_hold: None,
                },
            }
        );
        assert!(!v[0].is_base());
        let before = at("2026-06-20T00:00:00Z");
        assert_eq!(v[0].held_at(before), Some(Some(at("2026-06-29T02:17:03Z"))));
        assert_eq!(v[0].held_at(at("2026-06-30T00:00:00Z")), None);
        assert_eq!(v[1].held_at(before), None);
        let mut hold = v[1].clone();
        hold.properties.legal_hold = Some("true".into());
        assert_eq!(hold.held_at(before), Some(None));
        assert_eq!(v[1].is_current_version, Some(true));
        assert!(v[1].is_base());
        assert_eq!(v[2].version_id, None);
        assert!(v[2].is_base());
        assert_eq!(page.next_marker.as_deref(), Some("2!96!abc"));
        let empty =
            VersionList::parse("<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>")
                .unwrap();
        assert!(empty.blobs.blob.is_empty());
    }
}
