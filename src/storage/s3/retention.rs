//! Object Lock: the bucket check, the retention put on objects, reading an
//! object's retain-until date, and deleting by version. A bucket with
//! Object Lock is versioned: a DELETE without a version id only hides the
//! data behind a delete marker (the locked version stays, and is billed), so
//! handles of a repository with Object Lock delete every version of a key
//! instead, and report a version still under retention as `Retained`. It
//! never asks to bypass governance retention.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode, ObjectLockRetention};
use chrono::{DateTime, Utc};

use super::*;
use crate::storage::RetentionMode;

pub(super) fn lock_mode(mode: RetentionMode) -> ObjectLockMode {
    match mode {
        RetentionMode::Governance => ObjectLockMode::Governance,
        RetentionMode::Compliance => ObjectLockMode::Compliance,
    }
}

fn retention_mode(mode: RetentionMode) -> aws_sdk_s3::types::ObjectLockRetentionMode {
    match mode {
        RetentionMode::Governance => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
        RetentionMode::Compliance => aws_sdk_s3::types::ObjectLockRetentionMode::Compliance,
    }
}

pub(super) fn sdk_time(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(t.timestamp())
}

pub(super) fn chrono_time(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// The longest common prefix of `keys` (at a char boundary); the Azure
/// driver groups its version listings the same way.
pub(in crate::storage) fn common_prefix<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut it = keys.into_iter();
    let Some(first) = it.next() else {
        return String::new();
    };
    let mut len = first.len();
    for k in it {
        len = first
            .bytes()
            .zip(k.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    first[..len].to_string()
}

impl Inner {
    /// GetObjectLockConfiguration: Object Lock enabled, and no default
    /// retention rule.
    pub(super) async fn check_object_lock(&self) -> Result<(), StorageError> {
        let unsupported = |reason: String| StorageError::RetentionUnsupported {
            location: self.location.clone(),
            reason,
        };
        let not_enabled = || {
            unsupported(format!(
                "bucket {} does not have Object Lock enabled (enable it on the bucket, which needs \
                 versioning, or use a bucket created with Object Lock)",
                self.bucket
            ))
        };
        let resp = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let f = failure(e);
                if f.code.as_deref() == Some("ObjectLockConfigurationNotFoundError") {
                    return Err(not_enabled());
                }
                if f.status == Some(501) || f.code.as_deref() == Some("NotImplemented") {
                    return Err(unsupported(format!(
                        "the store does not implement Object Lock ({})",
                        f.message
                    )));
                }
                return Err(self.error("read the Object Lock configuration of", "", f));
            }
        };
        let Some(conf) = resp.object_lock_configuration() else {
            return Err(not_enabled());
        };
        if conf.object_lock_enabled() != Some(&ObjectLockEnabled::Enabled) {
            return Err(not_enabled());
        }
        if let Some(d) = conf.rule().and_then(|r| r.default_retention()) {
            if let Some(mode) = d.mode() {
                let period = match (d.days().filter(|n| *n > 0), d.years().filter(|n| *n > 0)) {
                    (Some(n), _) => format!("{n} days"),
                    (None, Some(n)) => format!("{n} years"),
                    (None, None) => "no period".into(),
                };
                return Err(unsupported(format!(
                    "bucket {} has a default retention rule ({}, {period}), which would also lock \
                     the objects pgtide removes by design (its writer lock, deletion markers, \
                     superseded WAL partials): remove the rule; pgtide puts the retention on each \
                     object it keeps",
                    self.bucket,
                    mode.as_str()
                )));
            }
        }
        Ok(())
    }

    /// The retain-until date of the current version of `key` (or of
    /// `version`); `None` without retention.
    pub(super) async fn retained_until(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, StorageError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("stat", key, failure(e)))?;
        if head.object_lock_mode().is_none() {
            return Ok(None);
        }
        Ok(head.object_lock_retain_until_date().and_then(chrono_time))
    }

    /// PutObjectRetention on `key` (its version `version`, if known).
    pub(super) async fn put_retention(
        &self,
        key: &str,
        version: Option<&str>,
        mode: RetentionMode,
        until: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version.map(str::to_string))
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .retention(
                ObjectLockRetention::builder()
                    .mode(retention_mode(mode))
                    .retain_until_date(sdk_time(until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("set the retention of", key, failure(e)))?;
        Ok(())
    }

    /// Every version (and delete marker) of `keys`, by full key: one
    /// listing per group of keys that share a parent.
    async fn versions_of(
        &self,
        keys: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, StorageError> {
        let wanted: BTreeSet<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for k in &wanted {
            let parent = k.rsplit_once('/').map_or("", |(p, _)| p);
            groups.entry(parent).or_default().push(k);
        }
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for group in groups.values() {
            let prefix = common_prefix(group.iter().copied());
            let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
            loop {
                let resp = self
                    .client
                    .list_object_versions()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .set_key_marker(key_marker.take())
                    .set_version_id_marker(version_marker.take())
                    .send()
                    .await
                    .map_err(|e| {
                        let rel = prefix.strip_prefix(&self.prefix).unwrap_or(&prefix);
                        self.error("list the versions of", rel, failure(e))
                    })?;
                let found = resp
                    .versions()
                    .iter()
                    .map(|v| (v.key(), v.version_id()))
                    .chain(
                        resp.delete_markers()
                            .iter()
                            .map(|m| (m.key(), m.version_id())),
                    );
                for (k, v) in found {
                    if let (Some(k), Some(v)) = (k, v) {
                        if wanted.contains(k) {
                            out.entry(k.to_string()).or_default().push(v.to_string());
                        }
                    }
                }
                if resp.is_truncated() != Some(true) {
                    break;
                }
                key_marker = resp.next_key_marker().map(str::to_string);
                version_marker = resp.next_version_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    return Err(service(
                        "list the versions of",
                        &prefix,
                        "truncated listing without a marker",
                        false,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Delete every version of `keys`. A version under retention stays:
    /// `Retained` (with its date) for the first one met, after the others
    /// of its batch were deleted.
    pub(super) async fn delete_versions(&self, keys: &[String]) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let versions = self.versions_of(keys).await?;
        let ids: Vec<(String, String)> = versions
            .into_iter()
            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
            .collect();
        for batch in ids.chunks(DELETE_BATCH) {
            let rel = |full: &str| full.strip_prefix(&self.prefix).unwrap_or(full).to_string();
            let first = rel(&batch[0].0);
            let objects = batch
                .iter()
                .map(|(k, v)| ObjectIdentifier::builder().key(k).version_id(v).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| service("delete", &first, error_chain(&e), false))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| service("delete", &first, error_chain(&e), false))?;
            let resp = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.error("delete", &first, failure(e)))?;
            let errors: Vec<_> = resp
                .errors()
                .iter()
                .filter(|e| !matches!(e.code(), Some("NoSuchKey" | "NoSuchVersion")))
                .collect();
            let Some(e) = errors.first() else { continue };
            let key = rel(e.key().unwrap_or_default());
            let code = e.code().unwrap_or("error");
            let message = e.message().unwrap_or("").trim().to_string();
            if code == "AccessDenied" {
                // Most likely the lock; the version's own date says so.
                if let Ok(until @ Some(_)) = self.retained_until(&key, e.version_id()).await {
                    return Err(StorageError::Retained { key, until });
                }
                if message.to_ascii_lowercase().contains("object lock") {
                    return Err(StorageError::Retained { key, until: None });
                }
            }
            let more = match errors.len() {
                1 => String::new(),
                n => format!(" (and {} more versions failed)", n - 1),
            };
            let f = Failure {
                status: None,
                code: Some(code.to_string()),
                message: format!("{code}: {message}{more}"),
                retryable: RETRYABLE_CODES.contains(&code),
                bucket_region: None,
            };
            return Err(self.error("delete", &key, f));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_of_keys() {
        assert_eq!(common_prefix(["a/b/c1", "a/b/c2", "a/b/d"]), "a/b/");
        assert_eq!(common_prefix(["a/b/c1"]), "a/b/c1");
        assert_eq!(common_prefix(["x", "y"]), "");
        assert_eq!(common_prefix(["é1", "é2"]), "é");
        assert_eq!(common_prefix(Vec::<&str>::new()), "");
    }

    #[test]
    fn dates_round_trip_through_the_sdk_type() {
        let t = DateTime::parse_from_rfc3339("2026-12-20T03:00:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(chrono_time(&sdk_time(t)), Some(t));
    }
}
