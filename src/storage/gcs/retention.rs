//! Object Retention Lock, GCS's counterpart of S3 Object Lock: the bucket
//! check, the retention put on objects as they are written (in the upload's
//! metadata), reading an object's retain-until time, and deleting every
//! generation of a key. `governance` maps to an `Unlocked` retention (a
//! principal with `storage.objects.overrideUnlockedRetention` can shorten
//! or remove it), `compliance` to `Locked` (nobody can, until it ends). A
//! retained object can be neither deleted nor overwritten; pgtide never
//! asks to override a retention.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};

use super::*;
use crate::storage::{group_prefixes, Retention, RetentionMode};

/// An object's `retention` (JSON API).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RetentionResource {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub retain_until_time: Option<String>,
}

impl RetentionResource {
    /// The retain-until time; `None` without a mode (no retention).
    pub fn until(&self) -> Option<DateTime<Utc>> {
        self.mode.as_ref()?;
        let t = self.retain_until_time.as_deref()?;
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The bucket fields the check reads.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BucketResource {
    #[serde(default)]
    object_retention: Option<ObjectRetentionConfig>,
    #[serde(default)]
    retention_policy: Option<RetentionPolicy>,
    #[serde(default)]
    default_event_based_hold: Option<bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ObjectRetentionConfig {
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetentionPolicy {
    /// Seconds, as a decimal string.
    #[serde(default)]
    retention_period: Option<String>,
    #[serde(default)]
    is_locked: Option<bool>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationsPage {
    #[serde(default)]
    items: Vec<Generation>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Generation {
    name: String,
    generation: String,
}

/// The GCS name of a mode.
pub(super) fn mode_name(mode: RetentionMode) -> &'static str {
    match mode {
        RetentionMode::Governance => "Unlocked",
        RetentionMode::Compliance => "Locked",
    }
}

/// The `retention` of an object written now under `r`.
pub(super) fn retention_json(r: Retention, now: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "mode": mode_name(r.mode),
        "retainUntilTime": r.until(now).to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// Why a bucket cannot hold pgtide's retained objects, from its resource;
/// `None` when it can.
fn bucket_refusal(bucket: &str, b: &BucketResource) -> Option<String> {
    if let Some(p) = &b.retention_policy {
        let secs = p.retention_period.as_deref().unwrap_or("?");
        let locked = if p.is_locked == Some(true) {
            "locked "
        } else {
            ""
        };
        return Some(format!(
            "bucket {bucket} has a {locked}bucket retention policy ({secs} s), which would also \
             lock the objects pgtide removes by design (its writer lock, deletion markers, \
             superseded WAL pieces): use a bucket without one; pgtide puts the retention on each \
             object it keeps"
        ));
    }
    if b.default_event_based_hold == Some(true) {
        return Some(format!(
            "bucket {bucket} puts an event-based hold on every new object, which would also lock \
             the objects pgtide removes by design: turn the default hold off"
        ));
    }
    let enabled = b
        .object_retention
        .as_ref()
        .and_then(|o| o.mode.as_deref())
        .is_some_and(|m| m.eq_ignore_ascii_case("enabled"));
    if !enabled {
        return Some(format!(
            "bucket {bucket} does not have object retention enabled (enable Object Retention \
             Lock on the bucket: `gcloud storage buckets create --enable-per-object-retention`, \
             or the console for an existing bucket)"
        ));
    }
    None
}

impl Inner {
    /// The bucket has Object Retention Lock, and no bucket-wide retention
    /// policy or default hold that would lock every object.
    pub(super) async fn check_object_retention(&self) -> Result<(), StorageError> {
        let url = format!(
            "{}?fields=objectRetention,retentionPolicy,defaultEventBasedHold",
            self.bucket_url()
        );
        let resp = self
            .send(
                "read the retention settings of",
                "",
                http::Method::GET,
                &url,
                &[],
                HttpRequestBody::empty(),
            )
            .await?;
        if resp.status == 501 {
            return Err(StorageError::RetentionUnsupported {
                location: self.location.clone(),
                reason: "the store does not implement object retention".into(),
            });
        }
        if !resp.ok() {
            return Err(self.error("read the retention settings of", "", &resp));
        }
        let b: BucketResource = serde_json::from_slice(&resp.body).map_err(|e| {
            service(
                "read the retention settings of",
                "",
                format!("unreadable bucket resource: {e}"),
                true,
            )
        })?;
        match bucket_refusal(&self.bucket, &b) {
            Some(reason) => Err(StorageError::RetentionUnsupported {
                location: self.location.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// The retain-until time of `key` (of its `generation`, or the live
    /// one); `None` without retention.
    pub(super) async fn retained_until(
        &self,
        key: &str,
        generation: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, StorageError> {
        let mut url = format!("{}?fields=retention", self.object_url(key));
        if let Some(g) = generation {
            url.push_str(&format!("&generation={g}"));
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            #[serde(default)]
            retention: Option<RetentionResource>,
        }
        let f: Fields = self.get_json("stat", key, &url, "object resource").await?;
        Ok(f.retention.as_ref().and_then(RetentionResource::until))
    }

    /// After a 403 to an upload of `size` bytes with CRC32C `crc` under
    /// retention: Ok when the object stored under `key` is those bytes (an
    /// upload sent again after its answer was lost), `Retained` when another
    /// object is retained there, else the refusal itself.
    pub(super) async fn same_object(
        &self,
        key: &str,
        refused: &Response,
        size: u64,
        crc: u32,
    ) -> Result<(), StorageError> {
        let url = format!("{}?fields=size,crc32c,retention", self.object_url(key));
        #[derive(serde::Deserialize)]
        struct Stored {
            #[serde(default)]
            size: String,
            #[serde(default)]
            crc32c: Option<String>,
            #[serde(default)]
            retention: Option<RetentionResource>,
        }
        let Ok(stored) = self
            .get_json::<Stored>("upload", key, &url, "object resource")
            .await
        else {
            return Err(self.error("upload", key, refused));
        };
        if stored.size == size.to_string()
            && stored.crc32c.as_deref() == Some(cloud::crc32c_b64(crc).as_str())
        {
            return Ok(());
        }
        match stored.retention.as_ref().and_then(RetentionResource::until) {
            Some(until) if until > Utc::now() => Err(StorageError::Retained {
                key: key.to_string(),
                until: Some(until),
            }),
            _ => Err(self.error("upload", key, refused)),
        }
    }

    /// Extend the retention of `key` (generation `generation`) to `until`.
    /// Extending is allowed in both modes; pgtide never shortens one.
    pub(super) async fn extend_retention(
        &self,
        key: &str,
        generation: &str,
        mode: RetentionMode,
        until: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let url = format!(
            "{}?generation={generation}&fields=retention",
            self.object_url(key)
        );
        let body = serde_json::json!({"retention": {
            "mode": mode_name(mode),
            "retainUntilTime": until.to_rfc3339_opts(SecondsFormat::Secs, true),
        }});
        let resp = self
            .send(
                "set the retention of",
                key,
                http::Method::PATCH,
                &url,
                &[(
                    "content-type",
                    "application/json; charset=UTF-8".to_string(),
                )],
                HttpRequestBody::from(Bytes::from(body.to_string())),
            )
            .await?;
        if !resp.ok() {
            return Err(self.error("set the retention of", key, &resp));
        }
        Ok(())
    }

    /// Every generation (live and noncurrent) of `keys`, by full name: one
    /// listing per group of keys that share a parent.
    async fn generations_of(
        &self,
        keys: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, StorageError> {
        let wanted: BTreeSet<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in group_prefixes(wanted.iter().map(String::as_str)) {
            let rel = prefix.strip_prefix(&self.prefix).unwrap_or(&prefix);
            let mut token: Option<String> = None;
            loop {
                let mut url = url::Url::parse(&format!("{}/o", self.bucket_url()))
                    .map_err(|e| service("list the versions of", rel, e.to_string(), false))?;
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("prefix", &prefix)
                        .append_pair("versions", "true")
                        .append_pair("maxResults", &LIST_PAGE.to_string())
                        .append_pair("fields", "items(name,generation),nextPageToken");
                    if let Some(t) = &token {
                        q.append_pair("pageToken", t);
                    }
                }
                let page: GenerationsPage = self
                    .get_json("list the versions of", rel, url.as_str(), "listing")
                    .await?;
                for g in page.items {
                    if wanted.contains(&g.name) {
                        out.entry(g.name).or_default().push(g.generation);
                    }
                }
                match page.next_page_token.filter(|t| !t.is_empty()) {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Delete every generation of `keys` (a versioned bucket keeps a
    /// deleted object as a noncurrent generation, billed). Generations
    /// still retained stay: `Retained` for the first one met, after every
    /// other deletion was tried.
    pub(super) async fn delete_generations(&self, keys: &[String]) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let generations = self.generations_of(keys).await?;
        let ids: Vec<(String, String)> = generations
            .into_iter()
            .flat_map(|(name, gs)| {
                let rel = name.strip_prefix(&self.prefix).unwrap_or(&name).to_string();
                gs.into_iter().map(move |g| (rel.clone(), g))
            })
            .collect();
        let results: Vec<Result<(), StorageError>> = futures::stream::iter(ids)
            .map(|(key, g)| async move { self.delete_one(&key, Some(&g)).await })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect()
            .await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => {}
                Err(e @ StorageError::Retained { .. }) => return Err(e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn retention_metadata_for_each_mode() {
        let r = Retention {
            mode: RetentionMode::Governance,
            period: std::time::Duration::from_secs(14 * 86_400),
        };
        assert_eq!(
            retention_json(r, at("2026-12-06T03:00:00.250Z")),
            serde_json::json!({"mode": "Unlocked", "retainUntilTime": "2026-12-20T03:00:01Z"})
        );
        let c = Retention {
            mode: RetentionMode::Compliance,
            ..r
        };
        assert_eq!(
            retention_json(c, at("2026-12-06T03:00:00Z"))["mode"],
            "Locked"
        );
    }

    #[test]
    fn an_objects_retention_date() {
        let r: RetentionResource = serde_json::from_str(
            r#"{"mode":"Unlocked","retainUntilTime":"2027-01-01T00:00:00.000Z"}"#,
        )
        .unwrap();
        assert_eq!(r.until(), Some(at("2027-01-01T00:00:00Z")));
        let none: RetentionResource =
            serde_json::from_str(r#"{"retainUntilTime":"2027-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(none.until(), None);
    }

    #[test]
    fn bucket_settings_that_refuse_retention() {
        let parse = |s: &str| serde_json::from_str::<BucketResource>(s).unwrap();
        assert_eq!(
            bucket_refusal("b", &parse(r#"{"objectRetention":{"mode":"Enabled"}}"#)),
            None
        );
        let r = bucket_refusal("b", &parse("{}")).unwrap();
        assert!(
            r.starts_with("bucket b does not have object retention enabled"),
            "{r}"
        );
        let r = bucket_refusal(
            "b",
            &parse(
                r#"{"objectRetention":{"mode":"Enabled"},
                    "retentionPolicy":{"retentionPeriod":"86400","isLocked":true}}"#,
            ),
        )
        .unwrap();
        assert!(
            r.starts_with("bucket b has a locked bucket retention policy (86400 s)"),
            "{r}"
        );
        let r = bucket_refusal(
            "b",
            &parse(r#"{"objectRetention":{"mode":"Enabled"},"defaultEventBasedHold":true}"#),
        )
        .unwrap();
        assert!(r.contains("event-based hold"), "{r}");
    }

    #[test]
    fn a_versions_listing() {
        let page: GenerationsPage = serde_json::from_str(
            r#"{"kind":"storage#objects","items":[
                {"name":"p/a","generation":"1796597954380922"},
                {"name":"p/a","generation":"1796597954380999"}],
                "nextPageToken":"tok"}"#,
        )
        .unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[1].generation, "1796597954380999");
        assert_eq!(page.next_page_token.as_deref(), Some("tok"));
    }
}
