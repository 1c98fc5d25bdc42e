//! Immutable repositories (issue 11): S3 Object Lock on moto (which
//! implements retention, its enforcement on versioned deletes, and
//! GetObjectLockConfiguration), and the rule that no job rewrites an object.
//!
//! Oracles: the store's own answers (HeadObject's retention mode and date,
//! ListObjectVersions: one version per key, nothing left behind a delete
//! marker), the exact one-line errors and exit codes, and an auditing
//! wrapper of the storage driver (`pgtide::storage::audit`) that records
//! every write over an existing key while the jobs run in-process.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::harness::cli::{pgtide, pgtide_env};
use crate::harness::pg::{pg_dump_bin, PgCluster};
use crate::harness::s3::{s3_env, S3Server, PREFIX};
use crate::pitr::{json, path_in, switch_wal, work_dir};

pub(crate) fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// What the store holds under the test prefix: per key (relative to the
/// repository), the number of versions and of delete markers.
async fn versions(client: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut km, mut vm) = (None::<String>, None::<String>);
    loop {
        let r = client
            .list_object_versions()
            .bucket(bucket)
            .prefix(format!("{PREFIX}/"))
            .set_key_marker(km.take())
            .set_version_id_marker(vm.take())
            .send()
            .await
            .expect("list object versions");
        let rel = |k: Option<&str>| {
            k.unwrap()
                .strip_prefix(&format!("{PREFIX}/"))
                .unwrap()
                .to_string()
        };
        for v in r.versions() {
            out.entry(rel(v.key())).or_default().0 += 1;
        }
        for m in r.delete_markers() {
            out.entry(rel(m.key())).or_default().1 += 1;
        }
        if r.is_truncated() != Some(true) {
            return out;
        }
        km = r.next_key_marker().map(str::to_string);
        vm = r.next_version_id_marker().map(str::to_string);
    }
}

/// Retention mode, retain-until date, last-modified time and ETag of the
/// current version of `key` (relative to the repository).
struct Head {
    mode: Option<String>,
    until: Option<DateTime<Utc>>,
    modified: DateTime<Utc>,
    etag: String,
}

async fn head(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Head {
    let h = client
        .head_object()
        .bucket(bucket)
        .key(format!("{PREFIX}/{key}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("head {key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
    let t = |d: &aws_smithy_types::DateTime| {
        DateTime::from_timestamp(d.secs(), d.subsec_nanos()).expect("date")
    };
    Head {
        mode: h.object_lock_mode().map(|m| m.as_str().to_string()),
        until: h.object_lock_retain_until_date().map(t),
        modified: h.last_modified().map(t).expect("last modified"),
        etag: h.e_tag().unwrap_or_default().to_string(),
    }
}

pub(crate) fn date(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a date: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// Objects written and removed by design, that carry no retention
/// (docs/FORMAT.md, "Object Lock").
pub(crate) fn unretained(key: &str) -> bool {
    key.starts_with("locks/")
        || key.starts_with("runs/")
        || key.ends_with("/deleting.json")
        || key.ends_with(".partial")
        || key.ends_with(".piece")
        || key == "wal/index.json"
}

#[test]
fn object_lock_init_refuses_a_store_that_cannot_keep_it() {
    let s3 = S3Server::moto();
    let env = s3_env();

    // A bucket without Object Lock: refused, nothing written.
    let plain = s3.fresh_bucket_blocking();
    let out = pgtide_env(
        &["init", "--repo", &plain.url, "--object-lock", "14d"],
        &env,
    );
    out.assert_one_line_error(
        4,
        &format!(
            "Object Lock retention is not available on s3://{}/{PREFIX}: bucket {} does not have Object Lock enabled (enable it on the bucket, which needs versioning, or use a bucket created with Object Lock)",
            plain.name, plain.name
        ),
    );
    let client = block(s3.client());
    assert!(block(versions(&client, &plain.name)).is_empty());

    // A local directory: refused.
    let work = work_dir("pgtide-object-lock-");
    let local = path_in(&work, "repo");
    pgtide(&["init", "--repo", &local, "--object-lock", "1d"]).assert_one_line_error(
        4,
        &format!("Object Lock retention is not available on {local}: this store keeps no retention; use an S3 bucket with Object Lock, an Azure container with version-level immutability or a GCS bucket with object retention"),
    );
    assert!(!std::path::Path::new(&local).join("pgtide.json").exists());
    // A mode without a period, a period of nothing: usage errors.
    pgtide(&["init", "--repo", &local, "--object-lock-mode", "compliance"]).assert_exit(2);
    pgtide(&["init", "--repo", &local, "--object-lock", "0s"])
        .assert_one_line_error(2, "--object-lock must be between 1s and 100 years");

    // A bucket with a default retention rule would lock the lock.
    let ruled = block(s3.fresh_object_lock_bucket());
    block(async {
        use aws_sdk_s3::types::{
            DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
            ObjectLockRule,
        };
        client
            .put_object_lock_configuration()
            .bucket(&ruled.name)
            .object_lock_configuration(
                ObjectLockConfiguration::builder()
                    .object_lock_enabled(ObjectLockEnabled::Enabled)
                    .rule(
                        ObjectLockRule::builder()
                            .default_retention(
                                DefaultRetention::builder()
                                    .mode(ObjectLockRetentionMode::Governance)
                                    .days(30)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("put object lock configuration");
    });
    pgtide_env(&["init", "--repo", &ruled.url, "--object-lock", "1d"], &env).assert_one_line_error(
        4,
        &format!("bucket {} has a default retention rule (GOVERNANCE, 30 days), which would also lock the objects pgtide removes by design", ruled.name),
    );

    // A bucket with Object Lock: the marker records it, and is retained.
    let locked = block(s3.fresh_object_lock_bucket());
    let out = pgtide_env(
        &[
            "init",
            "--json",
            "--repo",
            &locked.url,
            "--object-lock",
            "2h",
            "--object-lock-mode",
            "compliance",
        ],
        &env,
    );
    out.assert_ok();
    let r = json(&out);
    assert_eq!(r["format_version"], 3, "{r:#}");
    assert_eq!(
        r["object_lock"],
        serde_json::json!({"mode": "compliance", "seconds": 7200})
    );
    let h = block(head(&client, &locked.name, "pgtide.json"));
    assert_eq!(h.mode.as_deref(), Some("COMPLIANCE"));
    assert!(h.until.unwrap() >= h.modified + chrono::TimeDelta::seconds(7199));
    // Once is enough.
    pgtide_env(&["init", "--repo", &locked.url], &env).assert_one_line_error(
        4,
        &format!(
            "a pgtide repository already exists at s3://{}/{PREFIX}",
            locked.name
        ),
    );

    // Encrypted and immutable: the key set is retained like the rest.
    let both = block(s3.fresh_object_lock_bucket());
    let key = work.path().join("id.key");
    let out = pgtide(&["key", "generate", "--output", key.to_str().unwrap()]);
    out.assert_ok();
    let recipient = out.stdout.trim().to_string();
    let out = pgtide_env(
        &[
            "init",
            "--json",
            "--repo",
            &both.url,
            "--recipient",
            &recipient,
            "--object-lock",
            "1h",
        ],
        &env,
    );
    out.assert_ok();
    let r = json(&out);
    assert_eq!(
        (r["format_version"].as_u64(), r["encrypted"].as_bool()),
        (Some(3), Some(true)),
        "{r:#}"
    );
    let all = block(versions(&client, &both.name));
    assert!(all.keys().any(|k| k.starts_with("keys/")), "{all:#?}");
    for key in all.keys() {
        let h = block(head(&client, &both.name, key));
        assert_eq!(h.mode.as_deref(), Some("GOVERNANCE"), "{key}");
    }
}

#[test]
fn object_lock_retains_every_kept_object_and_retention_waits_for_its_date() {
    const LOCK_SECONDS: i64 = 60;
    let s3 = S3Server::moto();
    let env = s3_env();
    let bucket = block(s3.fresh_object_lock_bucket());
    let client = block(s3.client());
    // Small parts, so that the packs below go up as multipart uploads.
    let repo = format!("{}&part_size=5MiB", bucket.url);
    let pg = PgCluster::start(15);
    // About 7 MB of rows, stored uncompressed: a pack of two parts.
    pg.execute(
        "postgres",
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g + 1)::text) AS v FROM generate_series(1, 100000) g",
    );
    let conn = pg.conninfo("postgres", "postgres");
    let pg_dump = pg_dump_bin(15).display().to_string();
    let mut env_dump = env.clone();
    env_dump.push(("PGTIDE_PG_DUMP", pg_dump.as_str()));
    let dump = || {
        let out = pgtide_env(
            &[
                "dump",
                "--json",
                "--compress",
                "none",
                "--db",
                &conn,
                "--repo",
                &repo,
            ],
            &env_dump,
        );
        out.assert_ok();
        json(&out)["id"].as_str().expect("dump id").to_string()
    };

    pgtide_env(
        &[
            "init",
            "--repo",
            &repo,
            "--object-lock",
            &format!("{LOCK_SECONDS}s"),
        ],
        &env,
    )
    .assert_ok();
    let a = dump();

    // `delete` refuses, says until when, and touches nothing.
    let out = pgtide_env(&["delete", "--json", &a, "--repo", &repo], &env);
    out.assert_exit(12);
    let r = json(&out);
    assert_eq!(r["deleted"], false, "{r:#}");
    let a_until = date(&r["locked_until"]);
    out.assert_one_line_error(
        12,
        &format!(
            "dump {a} is under Object Lock retention until {}: it can be deleted from then on (nothing was deleted)",
            a_until.format("%Y-%m-%dT%H:%M:%SZ")
        ),
    );
    assert!(
        a_until > Utc::now(),
        "the lock ended before the test could check it"
    );
    let listed = pgtide_env(&["list", "--json", "--repo", &repo], &env);
    listed.assert_ok();
    assert!(listed.stdout.contains(&a), "{listed}");
    assert_eq!(
        json(&listed)["object_lock"],
        serde_json::json!({"mode": "governance", "seconds": LOCK_SECONDS})
    );
    let listed = pgtide_env(&["list", "--repo", &repo], &env);
    assert!(
        listed
            .stdout
            .contains("object lock: every object kept is retained in governance mode for "),
        "{listed}"
    );

    // Retention plans ahead: the older dump is kept, LOCKED, until then.
    let b = dump();
    let out = pgtide_env(&["expire", "--dump-keep-last", "1", "--repo", &repo], &env);
    out.assert_ok();
    assert!(
        out.stdout.lines().any(|l| l.starts_with("LOCKED")
            && l.contains(&a)
            && l.contains(&format!(
                "object lock until {}; not among the newest 1 (keep_last)",
                a_until.format("%Y-%m-%dT%H:%M:%SZ")
            ))),
        "{out}"
    );
    let out = pgtide_env(
        &["expire", "--json", "--dump-keep-last", "1", "--repo", &repo],
        &env,
    );
    out.assert_ok();
    let r = json(&out);
    let set = |r: &serde_json::Value, id: &str| {
        r["sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {r:#}"))
            .clone()
    };
    let sa = set(&r, &a);
    assert_eq!(sa["keep"], true, "{r:#}");
    assert_eq!(date(&sa["locked_until"]), a_until);
    assert_eq!(r["dumps_expired"], 0);
    assert_eq!(r["sets_retained"], 1);
    assert!(set(&r, &b)["locked_until"].is_null(), "{r:#}");

    // A backup, with its WAL streamed alongside.
    let out = pgtide_env(
        &[
            "backup",
            "--json",
            "--compress",
            "none",
            "--db",
            &conn,
            "--repo",
            &repo,
        ],
        &env,
    );
    out.assert_ok();
    let c = json(&out)["id"].as_str().unwrap().to_string();
    switch_wal(|q| pg.query_one("postgres", q));

    // Every object kept carries governance retention of at least the
    // period from its write; nothing was written twice, nothing is hidden
    // behind a delete marker, and the writer lock is gone for good.
    let all = block(versions(&client, &bucket.name));
    let mut multipart = 0;
    for (key, (v, dm)) in &all {
        assert_eq!(
            (*v, *dm),
            (1, 0),
            "{key}: versions, delete markers\n{all:#?}"
        );
        assert!(!key.starts_with("locks/"), "{all:#?}");
        let h = block(head(&client, &bucket.name, key));
        if unretained(key) {
            assert_eq!(h.mode, None, "{key}");
            continue;
        }
        assert_eq!(h.mode.as_deref(), Some("GOVERNANCE"), "{key}");
        let until = h
            .until
            .unwrap_or_else(|| panic!("{key} has no retain-until date"));
        // moto's LastModified has whole seconds.
        assert!(
            until >= h.modified + chrono::TimeDelta::seconds(LOCK_SECONDS - 1),
            "{key}: retained until {until}, written {}",
            h.modified
        );
        if key.ends_with(".pack") && h.etag.contains('-') {
            multipart += 1;
        }
    }
    for prefix in [
        format!("dumps/{a}/packs/"),
        format!("backups/{c}/packs/"),
        "wal/".to_string(),
    ] {
        assert!(
            all.keys().any(|k| k.starts_with(&prefix)),
            "nothing under {prefix}\n{all:#?}"
        );
    }
    assert!(
        multipart >= 2,
        "no pack went up as a multipart upload\n{all:#?}"
    );

    // Once the date has passed, the same expire removes the dump, every
    // version of every object of it.
    let wait = a_until - Utc::now() + chrono::TimeDelta::seconds(2);
    if let Ok(w) = wait.to_std() {
        std::thread::sleep(w);
    }
    let out = pgtide_env(
        &["expire", "--json", "--dump-keep-last", "1", "--repo", &repo],
        &env,
    );
    out.assert_ok();
    let r = json(&out);
    assert_eq!(set(&r, &a)["keep"], false, "{r:#}");
    assert_eq!(r["dumps_expired"], 1, "{r:#}");
    let all = block(versions(&client, &bucket.name));
    assert!(
        !all.keys().any(|k| k.starts_with(&format!("dumps/{a}/"))),
        "{all:#?}"
    );
    assert!(all.keys().any(|k| k.starts_with(&format!("dumps/{b}/"))));
}

/// Runs every job in this process against a local repository whose driver
/// is wrapped by `storage::audit`: dump ×2, logical restore, wal stream
/// (pieces included), wal push (a segment held as a piece, then one
/// already archived), backup ×2, verify, physical restore, a dump drill (a
/// run record), a run record as the daemon writes it, expire, delete,
/// delete --wal-before, all under the writer lock with a fast heartbeat.
/// No object may be written over an existing one except the lock, the one
/// object documented as rewritten (docs/FORMAT.md, "Object Lock"); every
/// finished object is read-only.
#[test]
fn no_job_rewrites_an_object_once_written() {
    use pgtide::jobs::{self, backup, dump, expire, logical_restore, physical_restore, Progress};
    use pgtide::pg::conninfo::ConnInfo;
    use pgtide::pg::lsn::Lsn;
    use pgtide::pipeline::{Compression, PipelineConfig};
    use pgtide::repo::lock::{LockTimings, RepoLock};
    use pgtide::repo::retention::Policy;
    use pgtide::repo::Repository;
    use pgtide::storage::audit::{Audited, WriteLog};
    use tokio_util::sync::CancellationToken;

    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    );
    let work = work_dir("pgtide-no-rewrite-");
    let repo_url = path_in(&work, "repo");
    let log = Arc::new(WriteLog::default());
    let conn = |db: &str| ConnInfo::from_cli(Some(&pg.conninfo("postgres", db))).unwrap();
    let progress = || Arc::new(Progress::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let storage = Audited::wrap(
        Arc::new(pgtide::storage::LocalFs::new(&repo_url)),
        log.clone(),
    );
    let repo = rt
        .block_on(Repository::open_storage(storage, true))
        .unwrap();
    let lock = rt
        .block_on(RepoLock::acquire(
            &repo,
            "test",
            LockTimings {
                heartbeat: Duration::from_millis(200),
                stale_after: Duration::from_secs(60),
            },
        ))
        .unwrap();

    let dump_settings = dump::DumpSettings {
        conn: conn("postgres"),
        jobs: 2,
        pipeline: PipelineConfig {
            chunk_size: 64 << 10,
            compression: Compression::Zstd(1),
            ..PipelineConfig::default()
        },
        schema_only: false,
        data_only: false,
        tables: Vec::new(),
        exclude_tables: Vec::new(),
        name: None,
        description: None,
        split_size: 256 << 10,
        split_by: dump::plan::SplitBy::Output,
        pg_dump: Some(pg_dump_bin(15)),
        lock_timeout: Duration::from_secs(30),
        copy_format: dump::CopyFormat::Auto,
    };
    let run_dump = || {
        rt.block_on(dump::run(
            &repo,
            &dump_settings,
            progress(),
            CancellationToken::new(),
        ))
        .unwrap()
        .id
    };
    let d1 = run_dump();
    let d2 = run_dump();

    pg.create_db("restored");
    rt.block_on(logical_restore::run(
        &repo,
        &d1,
        &logical_restore::RestoreSettings {
            conn: conn("restored"),
            jobs: 2,
            create: false,
            clean: false,
            schema_only: false,
            data_only: false,
            tables: Vec::new(),
            exclude_tables: Vec::new(),
            dry_run: false,
            no_owner: false,
            no_privileges: false,
            no_tablespaces: false,
            early_index_size: 32 << 20,
            pg_dump: Some(pg_dump_bin(15)),
            prefetch: 4,
        },
        progress(),
        CancellationToken::new(),
    ))
    .unwrap();
    assert_eq!(pg.query_one("restored", "SELECT count(*) FROM t"), "20000");

    // WAL: stream to a point inside a segment (its tail goes up as
    // pieces), then push that segment from pg_wal once complete, and
    // push it again (already archived).
    let stream = |stop_at: Lsn| {
        rt.block_on(jobs::wal::stream::run(
            &repo,
            &jobs::wal::stream::StreamSettings {
                conn: conn("postgres"),
                slot: "audit".into(),
                create_slot: true,
                compression: Compression::Zstd(1),
                partial_interval: Duration::from_millis(100),
                status_interval: Duration::from_secs(1),
                synchronous: false,
                application_name: "pgtide".into(),
                stop_at: Some(stop_at),
                live: None,
                accept_gap: false,
            },
            CancellationToken::new(),
        ))
        .unwrap()
    };
    pg.execute(
        "postgres",
        "INSERT INTO t SELECT g, 'more' FROM generate_series(20001, 21000) g",
    );
    let mid: Lsn = pg
        .query_one("postgres", "SELECT pg_current_wal_lsn()")
        .parse()
        .unwrap();
    stream(mid);
    let seg = pg.query_one("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.execute(
        "postgres",
        "INSERT INTO t SELECT g, 'yet more' FROM generate_series(21001, 22000) g",
    );
    stream(
        pg.query_one("postgres", "SELECT pg_current_wal_lsn()")
            .parse()
            .unwrap(),
    );
    switch_wal(|q| pg.query_one("postgres", q));
    let seg_path = pg.data_dir().join("pg_wal").join(&seg);
    let push = || {
        rt.block_on(jobs::wal::push::push(
            &repo,
            &seg_path,
            Compression::Zstd(1),
        ))
        .unwrap()
        .outcome
    };
    assert_eq!(push(), "stored");
    assert_eq!(push(), "already-archived");

    let backup_settings = backup::BackupSettings {
        conn: conn("postgres"),
        pipeline: PipelineConfig::default(),
        fast_checkpoint: true,
        manifest_checksums: "CRC32C".into(),
        max_rate_kbps: None,
        server_compression: None,
        name: None,
        wal: backup::WalSource::Stream,
        wal_wait: Duration::from_secs(60),
    };
    let run_backup = || {
        rt.block_on(backup::run(
            &repo,
            &backup_settings,
            progress(),
            CancellationToken::new(),
        ))
        .unwrap()
        .id
    };
    let b1 = run_backup();
    let b2 = run_backup();
    for id in [&b1, &d2] {
        let r = rt
            .block_on(jobs::verify::run(
                &repo,
                id,
                2,
                progress(),
                CancellationToken::new(),
            ))
            .unwrap();
        assert!(r.ok, "{id}: {:?}", r.problems);
    }
    let pgdata = work.path().join("restored-pgdata");
    let req = physical_restore::request::Request {
        backup: b2.clone(),
        pgdata: pgdata.clone(),
        target: Default::default(),
        action: None,
        timeline: None,
        exclusive: false,
        force: false,
        jobs: 2,
        tablespace_map: Vec::new(),
        start: false,
        pg_bin: None,
        os_user: None,
        repo_url: repo_url.clone(),
        secret_args: Vec::new(),
        settings: Vec::new(),
    };
    let s = physical_restore::request::settings(&req).unwrap();
    rt.block_on(physical_restore::request::run(
        &repo,
        &b2,
        &s,
        progress(),
        CancellationToken::new(),
    ))
    .unwrap();
    assert!(pgdata.join("PG_VERSION").exists());

    // A dump drill (it records its run), and a run record as the daemon
    // writes them.
    let drill = rt
        .block_on(jobs::drill::run(
            &repo,
            &d2,
            &jobs::drill::DrillSettings {
                scratch_base: work.path().to_path_buf(),
                keep: false,
                dry_run: false,
                target: physical_restore::select::Target::End,
                sql: None,
                sql_database: None,
                pg_bin: Some(pg.bin_dir().to_path_buf()),
                pg_dump: Some(pg_dump_bin(15)),
                os_user: None,
                superuser: None,
                jobs: 2,
                repo_url: repo_url.clone(),
                secret_args: Vec::new(),
            },
            progress(),
            CancellationToken::new(),
        ))
        .unwrap();
    assert!(drill.ok, "{:?}", drill.first_failure().map(|s| &s.detail));
    rt.block_on(jobs::drill::record(&repo, &drill, "test"))
        .unwrap();

    // Retention and deletion.
    let r = rt
        .block_on(expire::run(
            &repo,
            &expire::ExpirePolicy {
                backups: Policy {
                    keep_last: Some(1),
                    ..Policy::default()
                },
                dumps: Policy {
                    keep_last: Some(1),
                    ..Policy::default()
                },
            },
            false,
            Utc::now(),
        ))
        .unwrap();
    assert_eq!((r.backups_expired, r.dumps_expired), (1, 1), "{r:#?}");
    assert!(r.wal.objects > 0, "{r:#?}");
    rt.block_on(jobs::inspect::delete_wal_before(&repo, &b2))
        .unwrap();
    rt.block_on(jobs::inspect::delete(&repo, &d2)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    rt.block_on(lock.release()).unwrap();

    let writes = log.writes();
    let overwrites = log.overwrites();
    for (what, found) in [
        (
            "a dump pack",
            writes
                .iter()
                .any(|k| k.starts_with("dumps/") && k.ends_with(".pack")),
        ),
        (
            "a backup manifest",
            writes
                .iter()
                .any(|k| k.starts_with("backups/") && k.ends_with("/manifest.json")),
        ),
        (
            "a WAL segment",
            writes.iter().any(|k| {
                k.starts_with("wal/0000000")
                    && k.len() == "wal/00000001/000000010000000000000001".len()
            }),
        ),
        ("a WAL piece", writes.iter().any(|k| k.ends_with(".piece"))),
        (
            "a deletion marker",
            writes.iter().any(|k| k.ends_with("/deleting.json")),
        ),
        (
            "a run record",
            writes.iter().any(|k| k.starts_with("runs/drill/")),
        ),
        (
            "the lock, rewritten by its heartbeat",
            overwrites.iter().any(|k| k == "locks/writer.json"),
        ),
    ] {
        assert!(found, "no {what} among the writes: {writes:#?}");
    }
    let rewritten: Vec<&String> = overwrites
        .iter()
        .filter(|k| *k != "locks/writer.json" && *k != "wal/index.json")
        .collect();
    assert!(
        rewritten.is_empty(),
        "objects written twice: {rewritten:#?}"
    );

    // Finished objects are read-only.
    use std::os::unix::fs::PermissionsExt;
    let mut todo = vec![std::path::PathBuf::from(&repo_url)];
    let mut files = 0;
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                files += 1;
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o444, "{}", e.path().display());
            }
        }
    }
    assert!(files > 5);
}
