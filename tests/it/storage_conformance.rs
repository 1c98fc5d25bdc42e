//! The `Storage` contract (`src/storage/mod.rs`), proven on every driver: one
//! set of cases run against `LocalFs` (temp dir), moto_server, s3s-fs,
//! Azurite (Azure) and fake-gcs-server (GCS). A missing server fails these
//! tests; it never skips them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use pgtide::storage::{self, DynStorage, ObjectMeta, StorageError};

use crate::harness::emulators::{Emulator, TestPlace};
use crate::harness::s3::{S3Kind, S3Server, TestBucket};

/// Part size given to the S3 drivers here: the minimum, so that a 16 MiB
/// object takes four parts and the writer has to wait for parts in flight.
const PART: usize = 5 * 1024 * 1024;

enum Backend {
    Local,
    S3(&'static S3Server),
    /// Azurite or fake-gcs-server.
    Emulated(&'static Emulator),
}

struct Fixture {
    store: DynStorage,
    /// The raw client and bucket, for checks the trait cannot express.
    s3: Option<(S3Kind, aws_sdk_s3::Client, TestBucket)>,
    _dir: Option<tempfile::TempDir>,
    _place: Option<TestPlace>,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        match backend {
            Backend::Local => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = storage::open(dir.path().to_str().expect("utf-8 temp path"))
                    .await
                    .expect("open local store");
                Fixture {
                    store,
                    s3: None,
                    _dir: Some(dir),
                    _place: None,
                }
            }
            Backend::S3(server) => {
                let bucket = server.fresh_bucket().await;
                let url = format!("{}&part_size={PART}", bucket.url);
                let store = storage::open(&url)
                    .await
                    .unwrap_or_else(|e| panic!("open {url}: {e}"));
                Fixture {
                    store,
                    s3: Some((server.kind(), server.client().await, bucket)),
                    _dir: None,
                    _place: None,
                }
            }
            Backend::Emulated(server) => {
                let place = server.fresh().await;
                // The smallest part size both take (a multiple of 256 KiB for GCS).
                let option = match server.kind() {
                    crate::harness::emulators::Kind::Azurite => "block_size",
                    crate::harness::emulators::Kind::FakeGcs => "chunk_size",
                };
                let url = format!("{}?{option}={PART}", place.url);
                let store = storage::open(&url)
                    .await
                    .unwrap_or_else(|e| panic!("open {url}: {e}\n{}", server.log_tail()));
                Fixture {
                    store,
                    s3: None,
                    _dir: None,
                    _place: Some(place),
                }
            }
        }
    }

    /// Multipart uploads still open in the bucket, where the server can say
    /// (s3s-fs has no ListMultipartUploads).
    async fn open_uploads(&self) -> Option<Vec<String>> {
        let (kind, client, bucket) = self.s3.as_ref()?;
        if *kind != S3Kind::Moto {
            return None;
        }
        let resp = client
            .list_multipart_uploads()
            .bucket(&bucket.name)
            .send()
            .await
            .expect("list multipart uploads");
        Some(
            resp.uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_string))
                .collect(),
        )
    }

    /// Wait (up to 10 s) until no multipart upload is open.
    async fn assert_no_open_uploads(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.open_uploads().await {
                None => return,
                Some(open) if open.is_empty() => return,
                Some(open) if Instant::now() > deadline => {
                    panic!("multipart uploads still open: {open:?}")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// Deterministic bytes, different for each seed, so a misplaced part or a
/// wrong range shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

fn keys(list: &[ObjectMeta]) -> Vec<&str> {
    list.iter().map(|m| m.key.as_str()).collect()
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StorageError>, what: &str) {
    match r {
        Err(StorageError::NotFound { .. }) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes read, {} expected; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

// ---------------------------------------------------------------------------
// The cases

async fn put_get(f: Fixture) {
    let s = &f.store;
    let data = Bytes::from(pattern(1000, 1));
    s.put("one.bin", data.clone()).await.unwrap();
    assert_same(&s.get("one.bin").await.unwrap(), &data, "get");
    assert_eq!(s.size("one.bin").await.unwrap(), 1000);
    assert_same(
        &s.get_range("one.bin", 10, 20).await.unwrap(),
        &data[10..30],
        "range",
    );
    // Overwrite replaces.
    let data2 = Bytes::from(pattern(7, 2));
    s.put("one.bin", data2.clone()).await.unwrap();
    assert_same(
        &s.get("one.bin").await.unwrap(),
        &data2,
        "get after overwrite",
    );
    // Empty objects exist.
    s.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(s.get("empty").await.unwrap().len(), 0);
    assert_eq!(s.size("empty").await.unwrap(), 0);
    assert_eq!(
        s.list("").await.unwrap(),
        vec![
            ObjectMeta {
                key: "empty".into(),
                size: 0
            },
            ObjectMeta {
                key: "one.bin".into(),
                size: 7
            },
        ]
    );
}

async fn missing_is_not_found(f: Fixture) {
    let s = &f.store;
    assert_not_found(s.get("nope/missing.bin").await, "get");
    assert_not_found(s.get_range("nope/missing.bin", 0, 1).await, "get_range");
    assert_not_found(s.size("nope/missing.bin").await, "size");
    let e = s.get("missing.bin").await.unwrap_err();
    assert!(e.is_not_found() && !e.is_retryable(), "{e:?}");
    assert!(!e.to_string().contains('\n'), "one-line error: {e}");
    assert!(s.list("nope/").await.unwrap().is_empty());
}

async fn put_if_absent_once(f: Fixture) {
    let s = &f.store;
    s.put_if_absent("locks/lock", Bytes::from_static(b"first"))
        .await
        .unwrap();
    match s
        .put_if_absent("locks/lock", Bytes::from_static(b"second"))
        .await
    {
        Err(StorageError::AlreadyExists { key }) => assert_eq!(key, "locks/lock"),
        other => panic!("second put_if_absent: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(&s.get("locks/lock").await.unwrap()[..], b"first");
}

async fn writer_small(f: Fixture) {
    let s = &f.store;
    let data = pattern(100_003, 3);
    let mut w = s.writer("small/obj").await.unwrap();
    for piece in [&data[..1], &data[1..4097], &data[4097..]] {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    // Nothing visible before finish.
    assert!(s.list("small/").await.unwrap().is_empty());
    assert_eq!(w.finish().await.unwrap(), data.len() as u64);
    assert_same(&s.get("small/obj").await.unwrap(), &data, "get");
    assert_eq!(
        s.list("small/").await.unwrap(),
        vec![ObjectMeta {
            key: "small/obj".into(),
            size: data.len() as u64
        }]
    );
    // An empty writer makes an empty object.
    let w = s.writer("small/empty").await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 0);
    assert_eq!(s.size("small/empty").await.unwrap(), 0);
    f.assert_no_open_uploads().await;
}

async fn writer_multipart(f: Fixture) {
    let s = &f.store;
    let total = 16 * 1024 * 1024 + 12_345;
    let data = Bytes::from(pattern(total, 4));
    // Odd-sized pieces, one bigger than a part (sent without copying), so part
    // boundaries fall inside writes.
    let sizes = [
        1,
        4095,
        (1 << 20) + 7,
        3 * 1024 * 1024 + 1,
        777_777,
        PART + 3,
    ];
    let mut w = s.writer("packs/0.pack").await.unwrap();
    let (mut at, mut i) = (0, 0);
    while at < total {
        let n = sizes[i % sizes.len()].min(total - at);
        w.write(data.slice(at..at + n)).await.unwrap();
        at += n;
        i += 1;
    }
    assert!(
        s.list("packs/").await.unwrap().is_empty(),
        "object visible before finish"
    );
    assert_eq!(w.finish().await.unwrap(), total as u64);
    assert_eq!(s.size("packs/0.pack").await.unwrap(), total as u64);
    assert_same(&s.get("packs/0.pack").await.unwrap(), &data, "whole object");
    let ranges = [
        (0, 1),
        (0, 4096),
        (PART - 3, 10),
        (PART, PART),
        (2 * PART - 1, 2),
        (10 * 1024 * 1024 + 1, 3 * 1024 * 1024),
        (3 * PART, total - 3 * PART),
        (total - 100, 100),
        (total - 1, 1),
        (0, total),
    ];
    for (off, len) in ranges {
        let got = s
            .get_range("packs/0.pack", off as u64, len as u64)
            .await
            .unwrap_or_else(|e| panic!("range {off}+{len}: {e}"));
        assert_same(&got, &data[off..off + len], &format!("range {off}+{len}"));
    }
    for (off, len) in [(total - 10, 11), (total, 1), (total + 5, 10)] {
        match s.get_range("packs/0.pack", off as u64, len as u64).await {
            Err(e) => assert!(!e.is_not_found(), "range {off}+{len}: {e:?}"),
            Ok(b) => panic!("range {off}+{len} past the end gave {} bytes", b.len()),
        }
    }
    f.assert_no_open_uploads().await;
}

async fn range_past_end_is_an_error(f: Fixture) {
    let s = &f.store;
    let data = Bytes::from(pattern(100, 5));
    s.put("r", data.clone()).await.unwrap();
    assert_same(&s.get_range("r", 0, 100).await.unwrap(), &data, "whole");
    assert_same(
        &s.get_range("r", 99, 1).await.unwrap(),
        &data[99..],
        "last byte",
    );
    for (off, len) in [(90, 20), (100, 1), (200, 1), (0, 101), (u64::MAX - 1, 10)] {
        match s.get_range("r", off, len).await {
            Err(e) => {
                assert!(!e.is_not_found(), "range {off}+{len}: {e:?}");
                assert!(!e.is_retryable(), "range {off}+{len} retryable: {e:?}");
                assert!(!e.to_string().contains('\n'), "one-line error: {e}");
            }
            Ok(b) => panic!("range {off}+{len} of 100 bytes gave {} bytes", b.len()),
        }
    }
}

async fn abort_leaves_nothing(f: Fixture) {
    let s = &f.store;
    // Small: never reached the store.
    let mut w = s.writer("ab/small").await.unwrap();
    w.write(Bytes::from(pattern(1000, 6))).await.unwrap();
    w.abort().await.unwrap();
    // Large: a multipart upload with a part in flight.
    let mut w = s.writer("ab/large").await.unwrap();
    w.write(Bytes::from(pattern(PART + 1000, 7))).await.unwrap();
    w.write(Bytes::from(pattern(PART, 8))).await.unwrap();
    w.abort().await.unwrap();
    assert!(
        s.list("").await.unwrap().is_empty(),
        "{:?}",
        s.list("").await
    );
    assert_not_found(s.get("ab/large").await, "get aborted");
    f.assert_no_open_uploads().await;
}

async fn drop_leaves_nothing(f: Fixture) {
    let s = &f.store;
    let mut w = s.writer("dr/small").await.unwrap();
    w.write(Bytes::from(pattern(1000, 9))).await.unwrap();
    drop(w);
    let mut w = s.writer("dr/large").await.unwrap();
    w.write(Bytes::from(pattern(2 * PART + 1, 10)))
        .await
        .unwrap();
    drop(w);
    assert!(
        s.list("").await.unwrap().is_empty(),
        "{:?}",
        s.list("").await
    );
    assert_not_found(s.get("dr/large").await, "get dropped");
    // The abort runs in the background after the drop.
    f.assert_no_open_uploads().await;
    // The same key can be written afterwards.
    let mut w = s.writer("dr/large").await.unwrap();
    w.write(Bytes::from_static(b"again")).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 5);
    assert_eq!(&s.get("dr/large").await.unwrap()[..], b"again");
}

async fn list_sorted_with_prefixes_and_pages(f: Fixture) {
    let s = &f.store;
    // More than one S3 page (1000 keys), stored in random order.
    const N: usize = 1005;
    let mut names: Vec<String> = (0..N).map(|i| format!("many/k{i:05}")).collect();
    fastrand::Rng::with_seed(11).shuffle(&mut names);
    let extra = ["many2/x", "man", "other/y", "many/sub/deeper/z"];
    let all: Vec<String> = names
        .iter()
        .cloned()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
    futures::stream::iter(all.iter().map(|k| {
        let s = s.clone();
        let k = k.clone();
        async move { s.put(&k, Bytes::from(k.clone().into_bytes())).await }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<Vec<()>, _>>()
    .unwrap();

    let mut want_many: Vec<String> = (0..N).map(|i| format!("many/k{i:05}")).collect();
    want_many.push("many/sub/deeper/z".into());
    want_many.sort();
    let got = s.list("many/").await.unwrap();
    assert_eq!(
        keys(&got),
        want_many.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|m| m.size == m.key.len() as u64), "sizes");

    let got = s.list("many").await.unwrap();
    assert_eq!(got.len(), N + 2, "many/… and many2/x");
    assert_eq!(got.last().unwrap().key, "many2/x");
    let got = s.list("").await.unwrap();
    assert_eq!(got.len(), all.len());
    assert!(got.windows(2).all(|w| w[0].key < w[1].key), "sorted");
    assert_eq!(keys(&s.list("man").await.unwrap())[0], "man");
    assert_eq!(
        keys(&s.list("many/sub/").await.unwrap()),
        ["many/sub/deeper/z"]
    );
    assert_eq!(keys(&s.list("many/k0100").await.unwrap()).len(), 5);
    assert!(s.list("nothing/").await.unwrap().is_empty());
    assert!(s.list("many/k99999").await.unwrap().is_empty());

    // One delete_many over more than one S3 batch (1000 keys).
    s.delete_many(&all).await.unwrap();
    assert!(s.list("").await.unwrap().is_empty());
}

async fn delete_many_ignores_missing(f: Fixture) {
    let s = &f.store;
    for k in ["d/a", "d/b", "d/c", "d/e/f", "keep"] {
        s.put(k, Bytes::from_static(b"x")).await.unwrap();
    }
    let del: Vec<String> = ["d/a", "d/missing", "d/c", "d/e/f", "nope/none"]
        .map(String::from)
        .to_vec();
    s.delete_many(&del).await.unwrap();
    assert_eq!(keys(&s.list("").await.unwrap()), ["d/b", "keep"]);
    s.delete_many(&[]).await.unwrap();
    // Deleting again (all missing now) still succeeds.
    s.delete_many(&del).await.unwrap();
    assert_not_found(s.get("d/a").await, "deleted");
}

async fn nested_keys(f: Fixture) {
    let s = &f.store;
    let objs = [
        ("x/y/z/deep.bin", "deep"),
        ("x/y.bin", "y"),
        ("x/yy/z.bin", "yy"),
        ("x/y/z2", "z2"),
    ];
    for (k, v) in objs {
        s.put(k, Bytes::from(v)).await.unwrap();
    }
    for (k, v) in objs {
        assert_eq!(&s.get(k).await.unwrap()[..], v.as_bytes(), "{k}");
    }
    assert_eq!(
        keys(&s.list("x/y/").await.unwrap()),
        ["x/y/z/deep.bin", "x/y/z2"]
    );
    assert_eq!(
        keys(&s.list("x/y").await.unwrap()),
        ["x/y.bin", "x/y/z/deep.bin", "x/y/z2", "x/yy/z.bin"]
    );
    assert_eq!(
        keys(&s.list("x/y/z").await.unwrap()),
        ["x/y/z/deep.bin", "x/y/z2"]
    );
    assert_eq!(keys(&s.list("x/yy").await.unwrap()), ["x/yy/z.bin"]);
    let mut w = s.writer("x/w/a/b/c.bin").await.unwrap();
    w.write(Bytes::from_static(b"streamed")).await.unwrap();
    w.finish().await.unwrap();
    assert_eq!(&s.get("x/w/a/b/c.bin").await.unwrap()[..], b"streamed");
    s.delete_many(&["x/y/z/deep.bin".to_string()])
        .await
        .unwrap();
    assert_eq!(keys(&s.list("x/y/").await.unwrap()), ["x/y/z2"]);
}

/// Object Lock: a store (here: a directory, or a bucket without it) that
/// cannot keep retention says so in one line, for the check and for a
/// retained handle; an object written there has no retention.
async fn retention_needs_object_lock(f: Fixture) {
    let s = &f.store;
    let e = s.check_retention().await.unwrap_err();
    assert!(
        matches!(e, StorageError::RetentionUnsupported { .. }),
        "expected RetentionUnsupported, got {e:?}"
    );
    assert!(
        e.to_string().starts_with(&format!(
            "Object Lock retention is not available on {}: ",
            s.location()
        )),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'), "{e}");
    // An S3 or Azure handle makes a retained handle without asking the
    // store (the check above is what `init` asks); a directory refuses at
    // once.
    let azure = s.location().starts_with("az://");
    assert_eq!(
        s.with_retention(retention(3600)).is_ok(),
        f.s3.is_some() || azure
    );
    s.put("plain", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(s.retained_until("plain").await.unwrap(), None);
    assert_not_found(s.retained_until("missing").await, "retained_until");
    assert_eq!(storage::unretained(s).location(), s.location());
}

fn retention(seconds: u64) -> storage::Retention {
    storage::Retention {
        mode: storage::RetentionMode::Governance,
        period: Duration::from_secs(seconds),
    }
}

/// The same cases on every backend:
/// `storage_conformance::{local,moto,s3s_fs,azurite,fake_gcs}::CASE`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::new(super::Backend::Local).await).await
                }
            )*
        }
        mod moto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = super::S3Server::moto();
                    super::$case(super::Fixture::new(super::Backend::S3(server)).await).await
                }
            )*
        }
        mod s3s_fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = super::S3Server::s3s_fs();
                    super::$case(super::Fixture::new(super::Backend::S3(server)).await).await
                }
            )*
        }
        mod azurite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = super::Emulator::azurite();
                    super::$case(super::Fixture::new(super::Backend::Emulated(server)).await).await
                }
            )*
        }
        mod fake_gcs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = super::Emulator::fake_gcs();
                    super::$case(super::Fixture::new(super::Backend::Emulated(server)).await).await
                }
            )*
        }
    };
}

conformance!(
    put_get,
    missing_is_not_found,
    put_if_absent_once,
    writer_small,
    writer_multipart,
    range_past_end_is_an_error,
    abort_leaves_nothing,
    drop_leaves_nothing,
    list_sorted_with_prefixes_and_pages,
    delete_many_ignores_missing,
    nested_keys,
    retention_needs_object_lock,
);

/// Versions of `key` in `bucket`: (versions, delete markers).
async fn versions_of(
    client: &aws_sdk_s3::Client,
    bucket: &TestBucket,
    key: &str,
) -> (usize, usize) {
    let full = format!("{}/{key}", crate::harness::s3::PREFIX);
    let r = client
        .list_object_versions()
        .bucket(&bucket.name)
        .prefix(&full)
        .send()
        .await
        .expect("list object versions");
    (
        r.versions()
            .iter()
            .filter(|v| v.key() == Some(full.as_str()))
            .count(),
        r.delete_markers()
            .iter()
            .filter(|m| m.key() == Some(full.as_str()))
            .count(),
    )
}

/// Object Lock on the one server here that implements it: a retained
/// handle writes every object (PUT, create-if-absent, multipart) with the
/// retention from the write; its deletes remove every version and refuse
/// a retained one, naming its date; the unretained handle's objects carry
/// none and are removed for good, all versions of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_object_lock_retains_writes_and_deletes_by_version() {
    let server = S3Server::moto();
    let bucket = server.fresh_object_lock_bucket().await;
    let client = server.client().await;
    let url = format!("{}&part_size={PART}", bucket.url);
    let plain = storage::open(&url).await.unwrap();
    plain.check_retention().await.unwrap();
    let kept = plain.with_retention(retention(3600)).unwrap();
    let free = storage::unretained(&kept);
    let near = |t: Option<chrono::DateTime<chrono::Utc>>, what: &str| {
        let t = t.unwrap_or_else(|| panic!("{what}: no retention"));
        let want = chrono::Utc::now() + chrono::TimeDelta::seconds(3600);
        assert!(
            (t - want).num_seconds().abs() <= 60,
            "{what}: retained until {t}, expected about {want}"
        );
    };

    kept.put("a", Bytes::from_static(b"a")).await.unwrap();
    kept.put_if_absent("b", Bytes::from_static(b"b"))
        .await
        .unwrap();
    let mut w = kept.writer("c").await.unwrap();
    w.write(Bytes::from(pattern(3 * PART + 5, 9)))
        .await
        .unwrap();
    w.finish().await.unwrap();
    for k in ["a", "b", "c"] {
        near(kept.retained_until(k).await.unwrap(), k);
    }
    match kept.delete_many(&["a".to_string()]).await {
        Err(StorageError::Retained {
            key,
            until: Some(t),
        }) => {
            assert_eq!(key, "a");
            near(Some(t), "the refusal's date");
        }
        other => panic!("delete of a retained object: {other:?}"),
    }
    assert_eq!(versions_of(&client, &bucket, "a").await, (1, 0));
    assert_eq!(&kept.get("a").await.unwrap()[..], b"a");

    // Unretained: rewritten (two versions), then gone for good.
    free.put("lock", Bytes::from_static(b"1")).await.unwrap();
    free.put("lock", Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(free.retained_until("lock").await.unwrap(), None);
    assert_eq!(versions_of(&client, &bucket, "lock").await, (2, 0));
    free.delete_many(&["lock".to_string(), "missing".to_string()])
        .await
        .unwrap();
    assert_eq!(versions_of(&client, &bucket, "lock").await, (0, 0));

    // A short retention ends; then the delete removes every version.
    let brief = plain.with_retention(retention(2)).unwrap();
    brief.put("d", Bytes::from_static(b"d")).await.unwrap();
    assert!(brief.delete_many(&["d".to_string()]).await.is_err());
    tokio::time::sleep(Duration::from_secs(3)).await;
    brief.delete_many(&["d".to_string()]).await.unwrap();
    assert_eq!(versions_of(&client, &bucket, "d").await, (0, 0));
    assert_not_found(plain.size("d").await, "size after delete");
}

// ---------------------------------------------------------------------------
// Opening an S3 repository

async fn missing_bucket(server: &S3Server) {
    let url = server.url("pgtide-no-such-bucket", "p");
    match storage::open(&url).await {
        Err(e @ StorageError::BucketNotFound { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("pgtide-no-such-bucket") && !msg.contains('\n'),
                "{msg}"
            );
            println!("{msg}");
        }
        other => panic!(
            "{}: expected BucketNotFound, got {other:?}",
            server.endpoint()
        ),
    }
}

#[tokio::test]
async fn moto_missing_bucket_is_bucket_not_found() {
    missing_bucket(S3Server::moto()).await;
}

#[tokio::test]
async fn s3s_fs_missing_bucket_is_bucket_not_found() {
    missing_bucket(S3Server::s3s_fs()).await;
}

/// moto accepts any credentials, so wrong ones are checked on s3s-fs: a
/// private instance that knows other keys than the ones in the environment.
#[tokio::test]
async fn s3s_fs_wrong_credentials_are_access_denied() {
    crate::harness::s3::set_process_env();
    let server = S3Server::s3s_fs_with_keys("other-key", "other-secret");
    let url = server.url("any-bucket", "p");
    match storage::open(&url).await {
        Err(e @ StorageError::AccessDenied { .. }) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            println!("{msg}");
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable_one_line() {
    crate::harness::s3::set_process_env();
    // Nothing listens on port 1.
    let url = "s3://b/p?endpoint=http://127.0.0.1:1&region=us-east-1&path_style=true";
    let t = Instant::now();
    match storage::open(url).await {
        Err(e @ StorageError::Service { .. }) => {
            let msg = e.to_string();
            assert!(e.is_retryable(), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            println!("{msg}");
        }
        other => panic!("expected a retryable Service error, got {other:?}"),
    }
    eprintln!("unreachable endpoint failed after {:?}", t.elapsed());
}

/// Without any credentials the open fails at once with one line that says
/// so. Runs `no_credentials_child` in a child process with a clean
/// environment (the variables of this process are shared by every test).
#[test]
fn no_credentials_is_one_line() {
    // The check happens before any request: no server needed.
    let url = "s3://any-bucket/p?endpoint=http://127.0.0.1:1&region=us-east-1&path_style=true";
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "storage_conformance::no_credentials_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/pgtide-test-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/pgtide-test-credentials",
        )
        .env("PGTIDE_TEST_NO_CREDS_URL", url)
        .output()
        .expect("run test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn no_credentials_child() {
    let Ok(url) = std::env::var("PGTIDE_TEST_NO_CREDS_URL") else {
        return; // only meaningful as the child of no_credentials_is_one_line
    };
    match storage::open(&url).await {
        Err(e @ StorageError::AccessDenied { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("credentials could not be loaded"), "{msg}");
            println!("{msg}");
            assert!(!msg.contains('\n') && msg.len() < 300, "{msg}");
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Opening an Azure or GCS repository

#[tokio::test]
async fn azurite_missing_container_is_bucket_not_found() {
    Emulator::azurite();
    match storage::open("az://pgtide-no-such-container/p").await {
        Err(e @ StorageError::BucketNotFound { .. }) => {
            let msg = e.to_string();
            assert_eq!(
                msg,
                "container pgtide-no-such-container does not exist (create it, or check the container name in --repo)"
            );
        }
        other => panic!("expected BucketNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_gcs_missing_bucket_is_bucket_not_found() {
    Emulator::fake_gcs();
    match storage::open("gs://pgtide-no-such-bucket/p").await {
        Err(e @ StorageError::BucketNotFound { .. }) => {
            assert_eq!(
                e.to_string(),
                "bucket pgtide-no-such-bucket does not exist (create it, or check the bucket name in --repo)"
            );
        }
        other => panic!("expected BucketNotFound, got {other:?}"),
    }
}

/// Azurite checks shared-key signatures: another key is refused. Runs
/// `cloud_credentials_child` in a child process (the connection string is
/// process-wide).
#[test]
fn azurite_wrong_key_is_access_denied() {
    let server = Emulator::azurite();
    let place = server.fresh_blocking();
    let wrong = server.connection_string(
        "d3JvbmctYnV0LXdlbGwtZm9ybWVkLWtleS13cm9uZy1idXQtd2VsbC1mb3JtZWQta2V5LXdyb25nLWtleQ==",
    );
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "storage_conformance::cloud_credentials_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AZURE_STORAGE_CONNECTION_STRING", wrong)
        .env("PGTIDE_TEST_CLOUD_URL", &place.url)
        .output()
        .expect("run test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn cloud_credentials_child() {
    let Ok(url) = std::env::var("PGTIDE_TEST_CLOUD_URL") else {
        return; // only meaningful as the child of a credentials test
    };
    match storage::open(&url).await {
        Err(e @ StorageError::AccessDenied { .. }) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(
                msg.starts_with("access denied to az://") && msg.contains("(AuthorizationFailure)")
                    || msg.contains("(AuthenticationFailed)"),
                "{msg}"
            );
            assert!(!msg.contains('\n') && msg.len() < 300, "{msg}");
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
}

#[tokio::test]
async fn cloud_unreachable_endpoints_are_retryable_one_line() {
    for url in [
        "az://c00/p?account=devstoreaccount1&endpoint=http://127.0.0.1:1/devstoreaccount1",
        "gs://b/p?endpoint=http://127.0.0.1:1",
    ] {
        // The GCS emulator variable: no credentials are looked up.
        Emulator::fake_gcs();
        Emulator::azurite();
        let t = Instant::now();
        match storage::open(url).await {
            Err(e @ StorageError::Service { .. }) => {
                let msg = e.to_string();
                assert!(e.is_retryable(), "{msg}");
                assert!(!msg.contains('\n'), "{msg}");
                assert!(msg.starts_with("open "), "{msg}");
                println!("{msg}");
            }
            other => panic!("{url}: expected a retryable Service error, got {other:?}"),
        }
        eprintln!("{url} failed after {:?}", t.elapsed());
    }
}

#[tokio::test]
async fn unknown_scheme_is_bad_url() {
    match storage::open("ftp://host/x").await {
        Err(e @ StorageError::BadUrl { .. }) => assert_eq!(
            e.to_string(),
            "invalid repository location \"ftp://host/x\": use a path, file:///path, s3://bucket/prefix, az://container/prefix or gs://bucket/prefix"
        ),
        other => panic!("expected BadUrl, got {other:?}"),
    }
}
