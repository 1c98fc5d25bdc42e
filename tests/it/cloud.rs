//! Azure Blob Storage (Azurite) and Google Cloud Storage (fake-gcs-server)
//! repositories end to end, and `pgtide copy` between stores.
//!
//! - A dump → restore round trip on each (oracle of `dump_load`).
//! - A backup → PITR round trip on Azure, then `copy all` of it to GCS, and
//!   the same PITR from the copy (markers, pg_amcheck); `verify` on the copy;
//!   a backup taken straight into GCS restored to its end.
//! - Dumps copied local → S3 → Azure → GCS, restored from the last copy;
//!   a re-run copies nothing; a copy that lost objects half-way (manifest
//!   not written) completes on a re-run, so does one stopped (SIGTERM,
//!   exit 130) or killed (SIGKILL) half-way; a damaged source pack is refused
//!   (exit 5) and nothing of it is written; a target bound to another
//!   cluster is refused (exit 4).
//! - A copy of an encrypted repository stays encrypted with the same keys;
//!   a plain target or one with other keys is refused.
//! - Missing container or bucket, refused credentials, an unreachable
//!   endpoint, an unknown scheme: one line, exit 4.
//!
//! The emulators' variables (`AZURE_STORAGE_CONNECTION_STRING`,
//! `STORAGE_EMULATOR_HOST`) are set in this process when they start, so
//! every `pgtide` child (and the restored server's `restore_command`)
//! reaches them.

use std::time::Duration;

use crate::dump_load::{rich_cluster, round_trip};
use crate::harness::cli::{pgtide, pgtide_env};
use crate::harness::emulators::Emulator;
use crate::harness::oracle::assert_same_database;
use crate::harness::pg::PgCluster;
use crate::harness::s3::{s3_env, S3Server};
use crate::pitr::{
    assert_amcheck, backup, create_tables, json, marker, restore, s, stream_from, switch_wal,
    wait_archived, work_dir,
};

#[test]
fn dump_round_trip_azure() {
    let pg = rich_cluster();
    let place = Emulator::azurite().fresh_blocking();
    // Small blocks: the packs go up as staged blocks.
    let url = format!("{}?block_size=1MiB", place.url);
    round_trip(&pg, &url, &[], &["--compress", "zstd:1"], &[]);
}

#[test]
fn dump_round_trip_gcs() {
    let pg = rich_cluster();
    let place = Emulator::fake_gcs().fresh_blocking();
    // Small chunks: the packs go up as resumable uploads.
    let url = format!("{}?chunk_size=256KiB", place.url);
    round_trip(&pg, &url, &[], &["--compress", "none"], &[]);
}

/// Backup under `wal stream` into Azure, PITR from it; `copy all` to GCS
/// and the same PITR from the copy; a target of another cluster refused.
#[test]
fn pitr_on_azure_then_from_a_copy_on_gcs() {
    let pg = PgCluster::start(15);
    create_tables(&pg);
    let work = work_dir("pgtide-cloud-");
    let az = Emulator::azurite().fresh_blocking();
    let azure = format!("{}?block_size=1MiB", az.url);
    let conn = pg.conninfo("postgres", "postgres");
    let streamer = stream_from(&conn, &azure, "s", work.path(), &pg);

    pg.execute(
        "postgres",
        "INSERT INTO t (v) SELECT 'during ' || g FROM generate_series(1, 2000) g",
    );
    let b = backup(&conn, &azure, &[]);
    let id = s(&b, "id");
    marker(&pg, "before");
    std::thread::sleep(Duration::from_millis(1500));
    let target = pg.query_one("postgres", "SELECT now()");
    std::thread::sleep(Duration::from_millis(1500));
    marker(&pg, "after");
    let switched = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&azure, &switched);
    streamer.stop();

    let pitr = |repo: &str| {
        let r = restore(
            repo,
            "latest",
            &["--target-time", &target, "--target-action", "promote"],
            Some(pg.socket_dir()),
        );
        assert_eq!(r.report["backup"], id.as_str(), "{:#}", r.report);
        assert_eq!(r.markers(), ["before"], "target {target}\n{}", r.log());
        assert_amcheck(&r);
    };
    pitr(&azure);

    // Everything, WAL included, to GCS; the copy restores the same way.
    let gs = Emulator::fake_gcs().fresh_blocking();
    let gcs = format!("{}?chunk_size=256KiB", gs.url);
    let out = pgtide(&["copy", "all", "--json", "--from", &azure, "--to", &gcs]);
    out.assert_ok();
    let r = json(&out);
    assert_eq!(r["sets"][0]["id"], id.as_str(), "{r:#}");
    assert_eq!(r["sets"][0]["status"], "copied", "{r:#}");
    assert!(r["wal"]["objects_copied"].as_u64().unwrap() >= 2, "{r:#}");
    pgtide(&["verify", &id, "--repo", &gcs]).assert_ok();
    let l = json(&pgtide(&["list", "--json", "--repo", &gcs]));
    assert_eq!(l["backups"][0]["id"], id.as_str(), "{l:#}");
    pitr(&gcs);

    // Again: nothing left to copy.
    let r = json(&pgtide(&[
        "copy", "all", "--json", "--from", &azure, "--to", &gcs,
    ]));
    assert_eq!(r["sets"][0]["status"], "present", "{r:#}");
    assert_eq!(r["wal"]["objects_copied"], 0, "{r:#}");
    assert_eq!(r["bytes_copied"], 0, "{r:#}");

    // A backup taken straight into GCS (its WAL streamed alongside), and
    // restored from there to its end.
    let direct = format!(
        "{}?chunk_size=256KiB",
        Emulator::fake_gcs().fresh_blocking().url
    );
    let b2 = backup(&conn, &direct, &["--wal", "stream"]);
    let r = restore(
        &direct,
        "latest",
        &["--target-immediate", "--target-action", "promote"],
        Some(pg.socket_dir()),
    );
    assert_eq!(r.report["backup"], s(&b2, "id").as_str(), "{:#}", r.report);
    assert_eq!(r.markers(), ["after", "before"], "{}", r.log());
    drop(r);
    pgtide(&["verify", "latest", "--repo", &direct]).assert_ok();

    // A repository of another cluster is refused before anything is written.
    let other = work_dir("pgtide-cloud-other-");
    let other_repo = other.path().join("repo");
    let other_repo = other_repo.to_str().unwrap();
    pgtide(&["copy", "all", "--from", &azure, "--to", other_repo]).assert_ok();
    let cluster = std::path::Path::new(other_repo).join("cluster.json");
    let text = std::fs::read_to_string(&cluster).unwrap();
    let mut c: serde_json::Value = serde_json::from_str(&text).unwrap();
    c["system_identifier"] = "1234567890".into();
    std::fs::write(&cluster, serde_json::to_vec(&c).unwrap()).unwrap();
    std::fs::remove_dir_all(std::path::Path::new(other_repo).join("backups")).unwrap();
    pgtide(&["copy", &id, "--from", &azure, "--to", other_repo]).assert_one_line_error(
        4,
        "belongs to the cluster with system identifier 1234567890",
    );
    assert!(!std::path::Path::new(other_repo).join("backups").exists());
}

/// Dumps hop local → S3 → Azure → GCS and restore from the last copy; a
/// re-run, an interrupted copy and a damaged source.
#[test]
fn copy_dumps_between_every_kind_of_store() {
    let pg = PgCluster::start(15);
    pg.create_db("src");
    pg.execute(
        "src",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 60000) g;
         CREATE TABLE u (a text);
         INSERT INTO u SELECT md5(g::text) FROM generate_series(1, 1000) g;",
    );
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("repo");
    let local = local.to_str().unwrap();
    let db = pg.conninfo("postgres", "src");
    // Small chunks and packs: several packs of several chunks.
    let out = pgtide(&[
        "dump",
        "--json",
        "--db",
        &db,
        "--repo",
        local,
        "--chunk-size",
        "64KiB",
        "--compress",
        "none",
    ]);
    out.assert_ok();
    let id = json(&out)["id"].as_str().unwrap().to_string();

    let s3 = S3Server::moto().fresh_bucket_blocking().url;
    let az = Emulator::azurite().fresh_blocking().url;
    let gs = Emulator::fake_gcs().fresh_blocking().url;
    let env = s3_env();
    for (from, to) in [(local, s3.as_str()), (&s3, &az), (&az, &gs)] {
        let out = pgtide_env(
            &["copy", "latest", "--json", "--from", from, "--to", to],
            &env,
        );
        out.assert_ok();
        let r = json(&out);
        assert_eq!(r["sets"][0]["id"], id.as_str(), "{r:#}");
        assert_eq!(r["sets"][0]["status"], "copied", "{r:#}");
        assert_eq!(r["wal"]["objects_copied"], 0, "{r:#}");
    }
    pgtide(&["verify", "latest", "--repo", &gs]).assert_ok();
    let dst = pg.conninfo("postgres", "dst");
    pgtide(&["restore", &id, "--repo", &gs, "--db", &dst, "--create"]).assert_ok();
    assert_same_database(&pg, "src", &pg, "dst");

    // A copy that stopped half-way: the manifest and a pack never arrived.
    let local2 = dir.path().join("repo2");
    let local2 = local2.to_str().unwrap();
    let r = json(&pgtide(&[
        "copy", &id, "--json", "--from", &gs, "--to", local2,
    ]));
    let copied = r["sets"][0]["objects_copied"].as_u64().unwrap();
    let set = std::path::Path::new(local2).join("dumps").join(&id);
    std::fs::remove_file(set.join("manifest.json")).unwrap();
    std::fs::remove_file(set.join("packs/000000.pack")).unwrap();
    let l = json(&pgtide(&["list", "--json", "--repo", local2]));
    assert_eq!(l["dumps"].as_array().unwrap().len(), 0, "{l:#}");
    let r = json(&pgtide(&[
        "copy", "all", "--json", "--from", &gs, "--to", local2,
    ]));
    assert_eq!(r["sets"][0]["objects_copied"], 2, "{r:#}");
    assert_eq!(
        r["sets"][0]["objects_present"].as_u64().unwrap(),
        copied - 2,
        "{r:#}"
    );
    pgtide(&["verify", &id, "--repo", local2]).assert_ok();

    // A copy stopped (SIGTERM: exit 130) or killed (SIGKILL) once part of
    // the set is in the target: the set stays incomplete there; the same
    // command completes it.
    for signal in ["TERM", "KILL"] {
        let gs2 = format!(
            "{}?chunk_size=256KiB",
            Emulator::fake_gcs().fresh_blocking().url
        );
        let mut child = std::process::Command::new(crate::harness::cli::PGTIDE_BIN)
            .args(["copy", &id, "--from", local, "--to", &gs2])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let stopped = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            let l = pgtide(&["list", "--json", "--repo", &gs2]);
            if l.status.success()
                && json(&l)["incomplete"]
                    .as_array()
                    .is_some_and(|i| i.iter().any(|s| s["objects"].as_u64() >= Some(2)))
            {
                std::process::Command::new("kill")
                    .args([&format!("-{signal}"), &child.id().to_string()])
                    .status()
                    .unwrap();
                break true;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the copy made no progress"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let status = child.wait().unwrap();
        let l = json(&pgtide(&["list", "--json", "--repo", &gs2]));
        let finished = l["dumps"].as_array().unwrap().len() == 1;
        if stopped && signal == "TERM" && !finished {
            assert_eq!(status.code(), Some(130), "SIGTERM: {status:?}");
        }
        if !stopped || finished {
            eprintln!("the copy finished before SIG{signal} reached it");
        }
        let r = json(&pgtide(&[
            "copy", &id, "--json", "--from", local, "--to", &gs2,
        ]));
        assert_eq!(
            r["sets"][0]["status"],
            if finished { "present" } else { "copied" },
            "SIG{signal}: {r:#}"
        );
        pgtide(&["verify", &id, "--repo", &gs2]).assert_ok();
    }

    // A damaged pack at the source: refused, and nothing of it written.
    let pack = std::path::Path::new(local)
        .join("dumps")
        .join(&id)
        .join("packs/000000.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&pack, bytes).unwrap();
    let fresh = Emulator::azurite().fresh_blocking().url;
    pgtide(&["copy", &id, "--from", local, "--to", &fresh]).assert_one_line_error(5, "has CRC32");
    let l = json(&pgtide(&["list", "--json", "--repo", &fresh]));
    assert_eq!(l["dumps"].as_array().unwrap().len(), 0, "{l:#}");
    assert!(
        l["incomplete"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["objects"].as_u64() < Some(copied)),
        "{l:#}"
    );
}

#[test]
fn copy_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    pgtide(&["copy", "latest", "--from", repo, "--to", repo])
        .assert_one_line_error(4, "no pgtide repository");
    Emulator::azurite();
    Emulator::fake_gcs();
    pgtide(&["copy", "all", "--from", "az://pgtide-nope/x", "--to", repo])
        .assert_one_line_error(4, "container pgtide-nope does not exist");
    pgtide(&["copy", "all", "--from", "gs://pgtide-nope/x", "--to", repo])
        .assert_one_line_error(4, "bucket pgtide-nope does not exist");
    pgtide(&["copy", "all", "--from", "ftp://x/y", "--to", repo])
        .assert_one_line_error(4, "invalid repository location");
    // Refused credentials: exit 4 and one line, as for S3.
    let az = Emulator::azurite();
    let place = az.fresh_blocking();
    let wrong = az.connection_string(
        "d3JvbmctYnV0LXdlbGwtZm9ybWVkLWtleS13cm9uZy1idXQtd2VsbC1mb3JtZWQta2V5LXdyb25nLWtleQ==",
    );
    pgtide_env(
        &["list", "--repo", &place.url],
        &[("AZURE_STORAGE_CONNECTION_STRING", wrong.as_str())],
    )
    .assert_one_line_error(4, "access denied to az://");
    // An unreachable endpoint: exit 4, one line.
    pgtide(&["list", "--repo", "gs://b/p?endpoint=http://127.0.0.1:1"])
        .assert_one_line_error(4, "open gs://b/p: client error (Connect)");
}

/// A copy of an encrypted repository stays encrypted with the same keys: a
/// dump and a backup (with its sealed WAL) copied to Azure restore there
/// only with the identity; a target encrypted for other keys, or plain, is
/// refused.
#[test]
fn copy_of_an_encrypted_repository_stays_encrypted() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE TABLE s (id int PRIMARY KEY, v text);
         INSERT INTO s SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    );
    let work = work_dir("pgtide-cloud-crypt-");
    let key = work.path().join("id.key");
    let out = pgtide(&["key", "generate", "--output", key.to_str().unwrap()]);
    out.assert_ok();
    let recipient = out.stdout.trim().to_string();
    let key = key.to_str().unwrap();
    let repo = work.path().join("repo");
    let repo = repo.to_str().unwrap();
    pgtide(&["init", "--repo", repo, "--recipient", &recipient]).assert_ok();
    let conn = pg.conninfo("postgres", "postgres");
    pgtide(&["dump", "--db", &conn, "--repo", repo]).assert_ok();
    let b = backup(&conn, repo, &["--wal", "stream"]);

    let az = Emulator::azurite().fresh_blocking().url;
    let r = json(&pgtide(&[
        "copy", "all", "--json", "--from", repo, "--to", &az,
    ]));
    assert_eq!(r["sets"].as_array().unwrap().len(), 2, "{r:#}");
    assert!(r["wal"]["objects_copied"].as_u64().unwrap() >= 1, "{r:#}");
    // Reading the copy takes the key, as the original does.
    let dst = pg.conninfo("postgres", "back");
    pgtide(&["restore", "latest", "--repo", &az, "--db", &dst, "--create"])
        .assert_one_line_error(11, "no key was given");
    pgtide(&["verify", &s(&b, "id"), "--repo", &az, "--identity", key]).assert_ok();
    let dump_id = r["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "dump")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    pgtide(&[
        "restore",
        &dump_id,
        "--repo",
        &az,
        "--db",
        &dst,
        "--create",
        "--identity",
        key,
    ])
    .assert_ok();
    assert_eq!(
        pg.query_one(
            "back",
            "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM s"
        ),
        pg.query_one(
            "postgres",
            "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM s"
        )
    );

    // Into a plain repository, or one encrypted for another key: refused.
    let plain = work.path().join("plain");
    let plain = plain.to_str().unwrap();
    pgtide(&["init", "--repo", plain]).assert_ok();
    pgtide(&["copy", "all", "--from", repo, "--to", plain])
        .assert_one_line_error(4, "is not encrypted, the source is");
    let other_key = work.path().join("other.key");
    let out = pgtide(&["key", "generate", "--output", other_key.to_str().unwrap()]);
    let other = work.path().join("other");
    let other = other.to_str().unwrap();
    pgtide(&["init", "--repo", other, "--recipient", out.stdout.trim()]).assert_ok();
    pgtide(&["copy", "all", "--from", repo, "--to", other])
        .assert_one_line_error(4, "it is encrypted for other keys");
}
