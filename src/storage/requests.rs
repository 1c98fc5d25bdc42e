//! Storage requests by kind, process-wide: what the store bills. Drivers
//! count where they make a request (every HTTP attempt of S3, Azure and GCS,
//! retries included: they are billed too; for a local directory the
//! equivalent operation), so a job's report can say what it cost and the
//! daemon can export `pgtide_storage_requests_total{kind}`.
//!
//! Kinds: `put` (PutObject, UploadPart, CreateMultipartUpload,
//! CompleteMultipartUpload, retention PUTs, Azure block and blob puts, GCS
//! uploads; locally a file made visible), `get` (whole or ranged reads; a
//! file read), `list` (one per listing page; one per directory read),
//! `head` (metadata: HeadObject, HeadBucket, a GCS object resource; a
//! `stat`), `delete` (DeleteObject, AbortMultipartUpload, one batch delete
//! request; a file removed).
//!
//! Must never: decide anything from the counts (they are reports only).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// One kind of storage request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Put,
    Get,
    List,
    Head,
    Delete,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Put, Kind::Get, Kind::List, Kind::Head, Kind::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Get => "get",
            Kind::List => "list",
            Kind::Head => "head",
            Kind::Delete => "delete",
        }
    }
}

static COUNTS: [AtomicU64; 5] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Count one request of `kind`.
pub fn count(kind: Kind) {
    COUNTS[kind as usize].fetch_add(1, Ordering::Relaxed);
}

/// Count `n` requests of `kind`.
pub fn count_n(kind: Kind, n: u64) {
    COUNTS[kind as usize].fetch_add(n, Ordering::Relaxed);
}

/// Requests by kind: the `requests` object of every `--json` report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    pub put: u64,
    pub get: u64,
    pub list: u64,
    pub head: u64,
    pub delete: u64,
}

impl Requests {
    pub fn get_kind(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Put => self.put,
            Kind::Get => self.get,
            Kind::List => self.list,
            Kind::Head => self.head,
            Kind::Delete => self.delete,
        }
    }

    /// Requests made since `earlier` (a snapshot taken before).
    pub fn since(&self, earlier: &Requests) -> Requests {
        Requests {
            put: self.put.saturating_sub(earlier.put),
            get: self.get.saturating_sub(earlier.get),
            list: self.list.saturating_sub(earlier.list),
            head: self.head.saturating_sub(earlier.head),
            delete: self.delete.saturating_sub(earlier.delete),
        }
    }

    pub fn total(&self) -> u64 {
        self.put + self.get + self.list + self.head + self.delete
    }
}

/// The counts so far in this process.
pub fn snapshot() -> Requests {
    let n = |k: Kind| COUNTS[k as usize].load(Ordering::Relaxed);
    Requests {
        put: n(Kind::Put),
        get: n(Kind::Get),
        list: n(Kind::List),
        head: n(Kind::Head),
        delete: n(Kind::Delete),
    }
}

/// The kind of an HTTP request to S3, Azure Blob or GCS, from its method,
/// path and query.
pub fn classify_http(method: &str, path: &str, query: &str) -> Kind {
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.split_once('=').is_some_and(|(k, _)| k == name))
    };
    match method {
        "HEAD" => Kind::Head,
        "PUT" => Kind::Put,
        "DELETE" => Kind::Delete,
        // S3 DeleteObjects (`?delete`), Azure blob batch (`comp=batch`)
        // delete; otherwise uploads: S3 Create/CompleteMultipartUpload,
        // GCS uploads and resumable sessions.
        "POST" if has("delete") || query.split('&').any(|p| p == "comp=batch") => Kind::Delete,
        "POST" => Kind::Put,
        _ => {
            let gcs_json = path.contains("/storage/v1/b/");
            if has("list-type")
                || has("uploads")
                || has("versions")
                || query.split('&').any(|p| p == "comp=list")
                || (gcs_json && path.ends_with("/o"))
            {
                Kind::List
            } else if gcs_json && !query.split('&').any(|p| p == "alt=media") {
                // A GCS object resource: its metadata.
                Kind::Head
            } else {
                Kind::Get
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_requests_are_classified_by_what_they_bill() {
        let k = classify_http;
        // S3
        assert_eq!(k("PUT", "/b/k", ""), Kind::Put);
        assert_eq!(k("PUT", "/b/k", "partNumber=2&uploadId=x"), Kind::Put);
        assert_eq!(k("POST", "/b/k", "uploads"), Kind::Put);
        assert_eq!(k("POST", "/b/k", "uploadId=x"), Kind::Put);
        assert_eq!(k("POST", "/b", "delete"), Kind::Delete);
        assert_eq!(k("DELETE", "/b/k", "uploadId=x"), Kind::Delete);
        assert_eq!(k("GET", "/b", "list-type=2&prefix=wal%2F"), Kind::List);
        assert_eq!(k("GET", "/b", "uploads&prefix=x"), Kind::List);
        assert_eq!(k("GET", "/b", "versions&prefix=x"), Kind::List);
        assert_eq!(k("GET", "/b/k", ""), Kind::Get);
        assert_eq!(k("GET", "/b/k", "retention"), Kind::Get);
        assert_eq!(k("HEAD", "/b/k", ""), Kind::Head);
        assert_eq!(k("HEAD", "/b", ""), Kind::Head);
        // Azure
        assert_eq!(
            k("GET", "/c", "restype=container&comp=list&prefix=x"),
            Kind::List
        );
        assert_eq!(k("PUT", "/c/k", "comp=block&blockid=x"), Kind::Put);
        assert_eq!(
            k("POST", "/c", "restype=container&comp=batch"),
            Kind::Delete
        );
        // GCS
        assert_eq!(k("GET", "/storage/v1/b/bkt/o", "prefix=x"), Kind::List);
        assert_eq!(k("GET", "/storage/v1/b/bkt/o/k", ""), Kind::Head);
        assert_eq!(k("GET", "/storage/v1/b/bkt/o/k", "alt=media"), Kind::Get);
        assert_eq!(
            k("POST", "/upload/storage/v1/b/bkt/o", "uploadType=multipart"),
            Kind::Put
        );
    }

    #[test]
    fn differences_and_totals() {
        let a = Requests {
            put: 3,
            get: 2,
            list: 1,
            head: 0,
            delete: 5,
        };
        let b = Requests {
            put: 7,
            get: 2,
            list: 4,
            head: 1,
            delete: 5,
        };
        assert_eq!(
            b.since(&a),
            Requests {
                put: 4,
                get: 0,
                list: 3,
                head: 1,
                delete: 0
            }
        );
        assert_eq!(b.since(&a).total(), 8);
        assert_eq!(b.get_kind(Kind::List), 4);
    }
}
