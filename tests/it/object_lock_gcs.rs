//! `--object-lock` on Google Cloud Storage (Object Retention Lock), against
//! fake-gcs-server. The emulator stores and answers an object's `retention`
//! and keeps generations in versioned buckets, but it neither reports a
//! bucket's `objectRetention` setting, nor refuses to delete a retained
//! object, nor deletes a generation for good. So the tests prove: the
//! bucket check's refusal (the emulator's buckets look like real buckets
//! without the setting), the retention every write carries (read back from
//! the store, mode and date), deletes on a versioned bucket, and a whole dump into a repository whose marker records
//! Object Lock (made where the check passes, on moto): what it keeps is
//! retained, what pgtide removes by design is not, and `delete` waits.
//! Enforcement itself is the service's, and is proven for S3 on moto
//! (`object_lock.rs`).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use pgtide::storage::{self, DynStorage, Retention, RetentionMode, StorageError};

use crate::harness::cli::{pgtide, pgtide_env};
use crate::harness::emulators::{Emulator, TestPlace};
use crate::harness::pg::{pg_dump_bin, PgCluster};
use crate::harness::s3::{s3_env, S3Server};
use crate::object_lock::{block, date, unretained};
use crate::pitr::json;

const HOUR: Duration = Duration::from_secs(3600);

fn governance(period: Duration) -> Retention {
    Retention {
        mode: RetentionMode::Governance,
        period,
    }
}

/// The object resource fake-gcs-server holds for `key` (under `prefix/`).
fn resource(gcs: &Emulator, place: &TestPlace, key: &str) -> serde_json::Value {
    let path = format!(
        "/storage/v1/b/{}/o/prefix%2F{}",
        place.name,
        key.replace('/', "%2F")
    );
    let (status, body) = gcs.http("GET", &path, "");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Every generation fake-gcs-server holds under the bucket, by name.
fn generations(gcs: &Emulator, place: &TestPlace) -> Vec<String> {
    let path = format!(
        "/storage/v1/b/{}/o?versions=true&fields=items(name,generation)",
        place.name
    );
    let (status, body) = gcs.http("GET", &path, "");
    assert_eq!(status, 200, "GET {path}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("listing");
    let mut names: Vec<String> = v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn in_window(t: Option<DateTime<Utc>>, from: DateTime<Utc>, to: DateTime<Utc>, what: &str) {
    let t = t.unwrap_or_else(|| panic!("{what}: no retention"));
    assert!(
        t >= from && t <= to,
        "{what}: retained until {t}, expected between {from} and {to}"
    );
}

#[test]
fn gcs_object_lock_init_refuses_a_bucket_without_object_retention() {
    let gcs = Emulator::fake_gcs();
    let place = gcs.fresh_blocking();
    pgtide(&["init", "--repo", &place.url, "--object-lock", "14d"]).assert_one_line_error(
        4,
        &format!(
            "Object Lock retention is not available on {}: bucket {} does not have object retention enabled (enable Object Retention Lock on the bucket",
            place.url, place.name
        ),
    );
    let store = block(storage::open(&place.url)).expect("open");
    assert!(
        matches!(
            block(store.size("pgtide.json")),
            Err(StorageError::NotFound { .. })
        ),
        "init --object-lock wrote the marker"
    );
    pgtide(&["init", "--repo", &place.url]).assert_ok();
}

#[test]
fn gcs_writes_carry_object_retention_and_versioned_deletes_work() {
    let gcs = Emulator::fake_gcs();
    let place = gcs.fresh_versioned_bucket();
    block(async {
        // Small chunks: the 1 MiB object below is a resumable upload.
        let store = storage::open(&format!("{}?chunk_size=256KiB", place.url))
            .await
            .expect("open");
        let kept = store.with_retention(governance(HOUR)).expect("retention");
        let before = Utc::now();
        kept.put("a", Bytes::from_static(b"put")).await.unwrap();
        kept.put_if_absent("b", Bytes::from_static(b"if absent"))
            .await
            .unwrap();
        write(&kept, "c", 100).await;
        write(&kept, "d", 1024 * 1024 + 3).await;
        let after = Utc::now();
        let (from, to) = (
            before + TimeDelta::hours(1),
            after + TimeDelta::hours(1) + TimeDelta::seconds(1),
        );
        for key in ["a", "b", "c", "d"] {
            in_window(kept.retained_until(key).await.unwrap(), from, to, key);
            let r = resource(gcs, &place, key);
            assert_eq!(r["retention"]["mode"], "Unlocked", "{key}: {r:#}");
        }

        // Compliance is GCS's Locked mode.
        let locked = store
            .with_retention(Retention {
                mode: RetentionMode::Compliance,
                period: Duration::from_secs(90),
            })
            .unwrap();
        locked.put("e", Bytes::from_static(b"e")).await.unwrap();
        assert_eq!(resource(gcs, &place, "e")["retention"]["mode"], "Locked");

        // The plain store, and the unretained view of the retained one,
        // write no retention.
        store.put("f", Bytes::from_static(b"f")).await.unwrap();
        let plain = storage::unretained(&kept);
        plain.put("g", Bytes::from_static(b"g")).await.unwrap();
        for key in ["f", "g"] {
            assert_eq!(store.retained_until(key).await.unwrap(), None, "{key}");
            assert!(resource(gcs, &place, key).get("retention").is_none());
        }
        assert!(matches!(
            store.retained_until("missing").await,
            Err(StorageError::NotFound { .. })
        ));

        // A second generation of `a`; a plain delete of `f` leaves its
        // generation behind in a versioned bucket.
        store.put("a", Bytes::from_static(b"again")).await.unwrap();
        store.delete_many(&["f".to_string()]).await.unwrap();
        let all = generations(gcs, &place);
        assert_eq!(
            all.iter().filter(|n| *n == "prefix/a").count(),
            2,
            "{all:?}"
        );
        assert!(all.contains(&"prefix/f".to_string()), "{all:?}");

        // The retained view deletes every generation it lists, by number
        // (`generation=`, which on GCS removes that generation for good).
        // fake-gcs-server lists the generations but treats such a delete as
        // a plain one (and answers 404 for a noncurrent generation), so
        // here only the live objects can be seen to go.
        kept.delete_many(&["a".into(), "d".into(), "f".into(), "nothing".into()])
            .await
            .unwrap();
        let live: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(live, ["b", "c", "e", "g"]);
    });
}

async fn write(store: &DynStorage, key: &str, len: usize) {
    let mut w = store.writer(key).await.expect("writer");
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    for piece in data.chunks(100_000) {
        w.write(Bytes::copy_from_slice(piece)).await.expect("write");
    }
    assert_eq!(w.finish().await.expect("finish"), len as u64);
}

/// A repository whose marker records Object Lock, on GCS: the marker is made
/// by `init --object-lock` on moto (where the bucket check passes) and
/// stored, retained, in the emulator's bucket. Then a dump: every object it
/// keeps carries retention, what is removed by design does not, and
/// `delete` refuses until the date.
#[test]
fn gcs_repository_under_object_lock_retains_what_a_dump_keeps() {
    let s3 = S3Server::moto();
    let env = s3_env();
    let bucket = block(s3.fresh_object_lock_bucket());
    pgtide_env(
        &["init", "--repo", &bucket.url, "--object-lock", "1h"],
        &env,
    )
    .assert_ok();
    let marker = block(async {
        let client = s3.client().await;
        let got = client
            .get_object()
            .bucket(&bucket.name)
            .key(format!("{}/pgtide.json", crate::harness::s3::PREFIX))
            .send()
            .await
            .expect("get marker");
        got.body.collect().await.expect("marker body").into_bytes()
    });

    let gcs = Emulator::fake_gcs();
    let place = gcs.fresh_blocking();
    let store = block(storage::open(&place.url)).expect("open");
    block(
        store
            .with_retention(governance(HOUR))
            .unwrap()
            .put("pgtide.json", marker),
    )
    .expect("put marker");

    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let conn = pg.conninfo("postgres", "postgres");
    let pg_dump = pg_dump_bin(15).display().to_string();
    let before = Utc::now();
    let out = pgtide_env(
        &["dump", "--json", "--db", &conn, "--repo", &place.url],
        &[("PGTIDE_PG_DUMP", pg_dump.as_str())],
    );
    out.assert_ok();
    let id = json(&out)["id"].as_str().expect("dump id").to_string();

    let objects = block(store.list("")).expect("list");
    assert!(objects.len() > 3, "{objects:?}");
    for o in &objects {
        let until = block(store.retained_until(&o.key)).expect("retained_until");
        if unretained(&o.key) {
            assert_eq!(until, None, "{} is removed by design", o.key);
        } else {
            let t = until.unwrap_or_else(|| panic!("{} kept without retention", o.key));
            assert!(t >= before + TimeDelta::minutes(59), "{}: {t}", o.key);
        }
    }

    let out = pgtide(&["delete", "--json", &id, "--repo", &place.url]);
    out.assert_exit(12);
    let until = date(&json(&out)["locked_until"]);
    assert!(until > Utc::now(), "{until}");
    out.assert_one_line_error(
        12,
        &format!("dump {id} is under Object Lock retention until"),
    );
    pgtide(&["verify", &id, "--repo", &place.url]).assert_ok();
}
