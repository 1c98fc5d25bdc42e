//! The request bill (issue 13, part 3), on a local directory and moto: the
//! `requests` object of `--json` reports, the exact requests of a `wal
//! push`, and a bounded number of requests for `list`, the archive side of
//! `wal stream` start, restore planning and `wal fetch` on an archive of
//! 10,000 segments. In-process counts go through a wrapper that counts the
//! listing pages a store would send (1,000 keys a page), since the
//! process-wide counters are shared with the tests running beside.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use pgtide::pipeline::Compression;
use pgtide::repo::wal_archive::{encode_object, WalArchive};
use pgtide::repo::Repository;
use pgtide::storage::{DynStorage, ObjectMeta, ObjectWriter, Storage, StorageError};

use crate::harness::cli::pgtide;
use crate::harness::s3::S3Server;

const SEG: u64 = 16 << 20;
const SEGMENTS: u64 = 10_000;
/// Requests allowed for one bounded operation, whatever the archive's length.
const BOUND: u64 = 10;
/// `list`: besides the WAL index and its tail, it lists the dumps, the
/// backups, the incomplete and the deleting sets and the drill records
/// (about 7 listings on S3; a local directory counts one per directory
/// read). None depends on the archive's length.
const LIST_BOUND: u64 = 16;

fn name(tli: u32, segno: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", segno / 256, segno % 256)
}

/// A segment whose first page has a long header (what `wal push` checks).
fn segment(segno: u64) -> Vec<u8> {
    let mut b = vec![0u8; SEG as usize];
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0006u16.to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[8..16].copy_from_slice(&(segno * SEG).to_le_bytes());
    b[24..32].copy_from_slice(&7_300_000_000_000_000_077u64.to_le_bytes());
    b[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b
}

/// Counts requests as a store would bill them: a listing is one request
/// per 1,000 keys returned (at least one).
#[derive(Debug)]
struct Tally {
    inner: DynStorage,
    n: Arc<AtomicU64>,
    full_wal_listings: Arc<AtomicU64>,
}

impl Tally {
    fn add(&self, n: u64) {
        self.n.fetch_add(n, Ordering::Relaxed);
    }
    fn pages(n: usize) -> u64 {
        (n as u64).div_ceil(1000).max(1)
    }
}

#[async_trait]
impl Storage for Tally {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.add(1);
        self.inner.put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.add(1);
        self.inner.put_if_absent(key, data).await
    }
    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.add(1);
        self.inner.writer(key).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.add(1);
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        self.add(1);
        self.inner.get_range(key, offset, len).await
    }
    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        self.add(1);
        self.inner.size(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        if prefix == "wal/" {
            self.full_wal_listings.fetch_add(1, Ordering::Relaxed);
        }
        let v = self.inner.list(prefix).await?;
        self.add(Self::pages(v.len()));
        Ok(v)
    }
    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let v = self.inner.list_after(prefix, start_after).await?;
        self.add(Self::pages(v.len()));
        Ok(v)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        self.add(keys.len().div_ceil(1000) as u64);
        self.inner.delete_many(keys).await
    }
}

fn requests(out: &crate::harness::cli::CliOutput) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}):\n{out}");
    });
    let r = v["requests"].clone();
    for k in ["put", "get", "list", "head", "delete"] {
        assert!(
            r[k].is_u64(),
            "requests.{k} missing or not an integer: {r}\n{out}"
        );
    }
    r
}

fn total(r: &serde_json::Value) -> u64 {
    ["put", "get", "list", "head", "delete"]
        .iter()
        .map(|k| r[k].as_u64().unwrap())
        .sum()
}

async fn seed(storage: &DynStorage, segnos: std::ops::Range<u64>) {
    let obj = encode_object(b"tiny", Compression::None).unwrap();
    futures::stream::iter(segnos)
        .map(|n| {
            let (s, o) = (storage.clone(), obj.clone());
            async move {
                s.put(&format!("wal/00000001/{}", name(1, n)), o)
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

async fn bill(url: &str, s3: bool) {
    let dir = tempfile::tempdir().unwrap();
    // `wal push` of one segment into an empty store: the marker and the
    // cluster record made, the segment stored, its partials looked for.
    let f = dir.path().join(name(1, 1));
    std::fs::write(&f, segment(1)).unwrap();
    let out = pgtide(&["wal", "push", "--repo", url, "--json", f.to_str().unwrap()]);
    out.assert_ok();
    let r = requests(&out);
    eprintln!("wal push, first: {r}");
    // Another segment into the repository as it now is.
    let f = dir.path().join(name(1, 2));
    std::fs::write(&f, segment(2)).unwrap();
    let out = pgtide(&["wal", "push", "--repo", url, "--json", f.to_str().unwrap()]);
    out.assert_ok();
    let r = requests(&out);
    eprintln!("wal push: {r}");
    // One PUT (the segment) and one LIST (its partials, to remove); the
    // marker and cluster record read; S3 also checks the bucket (HEAD).
    assert_eq!(r["put"], 1, "{r}");
    assert_eq!(r["list"], 1, "{r}");
    assert_eq!(r["get"], 2, "{r}");
    assert_eq!(r["head"], u64::from(s3), "{r}");
    assert_eq!(r["delete"], 0, "{r}");

    let storage = pgtide::storage::open(url).await.unwrap();
    seed(&storage, 3..SEGMENTS + 1).await;

    // The first `list` finds no index: it lists everything once and writes it.
    let out = pgtide(&["list", "--repo", url, "--json"]);
    out.assert_ok();
    eprintln!("list, building the index: {}", requests(&out));
    // WAL written since (past REFRESH_EVERY): still bounded, and the reader
    // refreshes the index.
    seed(&storage, SEGMENTS + 1..SEGMENTS + 301).await;
    for round in 0..2 {
        let out = pgtide(&["list", "--repo", url, "--json"]);
        out.assert_ok();
        let r = requests(&out);
        eprintln!("list {round}: {r}");
        assert!(total(&r) <= LIST_BOUND, "list took {r}");
        if round == 1 {
            assert_eq!(r["put"], 0, "the index was refreshed in round 0: {r}");
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["wal"][0]["segments"], SEGMENTS + 300, "{}", out.stdout);
        assert_eq!(v["wal"][0]["gaps"].as_array().unwrap().len(), 0);
    }

    // In process, through the tally.
    let n = Arc::new(AtomicU64::new(0));
    let full = Arc::new(AtomicU64::new(0));
    let tally: DynStorage = Arc::new(Tally {
        inner: storage.clone(),
        n: n.clone(),
        full_wal_listings: full.clone(),
    });
    let take = || n.swap(0, Ordering::Relaxed);
    // `wal stream` start, archive side: the newest segment of each timeline
    // and the history files.
    let archive = WalArchive::new(tally.clone(), SEG, Compression::Zstd(1));
    let segs = archive.segments().await.unwrap();
    assert_eq!(segs[&1].len() as u64, SEGMENTS + 300);
    archive.histories().await.unwrap();
    let start = take();
    eprintln!("wal stream start (archive side): {start} requests");
    assert!(start <= BOUND, "{start}");
    // Restore planning: the WAL a backup needs, and the timeline histories.
    let archive = WalArchive::new(tally.clone(), SEG, Compression::Zstd(1));
    let lsn = |segno: u64| pgtide::pg::lsn::Lsn(segno * SEG);
    assert_eq!(
        archive
            .missing_in_range(1, lsn(100), lsn(9_000))
            .await
            .unwrap(),
        None
    );
    let repo = Repository::open_storage(tally.clone(), false)
        .await
        .unwrap();
    pgtide::jobs::physical_restore::histories(&repo)
        .await
        .unwrap();
    let plan = take();
    eprintln!("restore planning: {plan} requests");
    assert!(plan <= BOUND, "{plan}");
    // A segment the index holds but the store lost is reported missing at
    // once (found at fetch time); one missing from the index but present
    // (written behind its last key) is found.
    storage
        .delete_many(&[format!("wal/00000001/{}", name(1, 50))])
        .await
        .unwrap();
    let r = pgtide::jobs::wal::fetch::fetch(&repo, &name(1, 50), &dir.path().join("x"), None)
        .await
        .unwrap();
    assert_eq!(r, pgtide::jobs::wal::fetch::Fetched::NotFound);
    take();
    // `wal fetch` of a segment the archive holds: one GET, nothing else.
    let dest = dir.path().join("RECOVERYXLOG");
    let r = pgtide::jobs::wal::fetch::fetch(&repo, &name(1, 77), &dest, None)
        .await
        .unwrap();
    assert_eq!(
        r,
        pgtide::jobs::wal::fetch::Fetched::Served { partial: false }
    );
    assert_eq!(take(), 1, "wal fetch of an archived segment");
    // From the spool: none.
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join(name(1, 78)), b"spooled").unwrap();
    let r = pgtide::jobs::wal::fetch::fetch(&repo, &name(1, 78), &dest, Some(&spool))
        .await
        .unwrap();
    assert_eq!(
        r,
        pgtide::jobs::wal::fetch::Fetched::Served { partial: false }
    );
    assert_eq!(take(), 0, "wal fetch from the spool");
    assert_eq!(
        full.load(Ordering::Relaxed),
        0,
        "no full listing of wal/ while the index is right"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bill_local() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("repo").to_str().unwrap().to_string();
    bill(&url, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bill_s3() {
    let bucket = S3Server::moto().fresh_bucket().await;
    bill(&bucket.url, true).await;
}

/// A data directory is mostly small files, each one chunk: `restore
/// --pgdata` and `verify` read the chunks that lie back to back in a pack
/// together (one ranged GET a run of up to 4 MiB), not one GET a file.
#[test]
fn restore_and_verify_read_small_files_in_runs() {
    use crate::harness::cli::pgtide_env;
    use crate::harness::pg::PgCluster;
    use crate::harness::s3::s3_env;

    let env = s3_env();
    let bucket = crate::object_lock::block(S3Server::moto().fresh_bucket());
    let pg = PgCluster::start(16);
    let conn = pg.conninfo("postgres", "postgres");
    let out = pgtide_env(
        &["backup", "--json", "--db", &conn, "--repo", &bucket.url],
        &env,
    );
    out.assert_ok();
    let work = tempfile::tempdir().unwrap();
    let pgdata = work.path().join("restored");
    let out = pgtide_env(
        &[
            "restore",
            "latest",
            "--json",
            "--repo",
            &bucket.url,
            "--pgdata",
            pgdata.to_str().unwrap(),
        ],
        &env,
    );
    out.assert_ok();
    let files = serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["files"]
        .as_u64()
        .unwrap();
    let gets = requests(&out)["get"].as_u64().unwrap();
    assert!(files > 500, "{files} files");
    assert!(gets * 20 < files, "{gets} GETs for {files} files\n{out}");
    assert!(pgdata.join("PG_VERSION").is_file());

    let out = pgtide_env(&["verify", "latest", "--json", "--repo", &bucket.url], &env);
    out.assert_ok();
    let chunks = serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["chunks"]
        .as_u64()
        .unwrap();
    let gets = requests(&out)["get"].as_u64().unwrap();
    assert!(gets * 20 < chunks, "{gets} GETs for {chunks} chunks\n{out}");
}
