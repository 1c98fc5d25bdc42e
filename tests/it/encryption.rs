//! Encrypted repositories against real servers: nothing readable in the
//! stored objects, round trips of dumps and of backups with point-in-time
//! recovery through the server's `restore_command`, in public-key and
//! passphrase mode, on local and S3 repositories; key rotation; tampering.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::cli::{pgtide, Cli};
use crate::harness::pg::PgCluster;
use crate::harness::s3::{s3_env, set_process_env, S3Server};
use crate::pitr::{json, path_in, switch_wal, wait_archived, wait_until, work_dir, Streamer};

const CANARY: &str = "CANARY-7f3a9c-PGTIDE";

/// A new age identity in `dir`: (identity file, recipient).
fn keypair(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(name);
    let out = pgtide(&["key", "generate", "--output", path.to_str().unwrap()]);
    out.assert_ok();
    let recipient = out.stdout.trim().to_string();
    assert!(recipient.starts_with("age1"), "{out}");
    let mode = fs::metadata(&path).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(mode.mode() & 0o777, 0o600, "identity files are private");
    (path.to_str().unwrap().to_string(), recipient)
}

/// A cluster whose rows, large object and data directory hold the canary.
fn canary_cluster() -> PgCluster {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        &format!(
            "CREATE TABLE secrets (id int PRIMARY KEY, s text);
             INSERT INTO secrets SELECT g, '{CANARY}-' || g FROM generate_series(1, 20000) g;
             SELECT lo_from_bytea(0, convert_to('{CANARY} in a large object', 'UTF8'));"
        ),
    );
    fs::write(
        pg.data_dir().join("canary_note.txt"),
        format!("{CANARY} in a file of the data directory\n"),
    )
    .unwrap();
    pg
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether `bytes` hold the canary, as they are or inside any zstd frame
/// that starts somewhere in them.
fn holds_canary(bytes: &[u8]) -> bool {
    let needle = CANARY.as_bytes();
    if bytes.windows(needle.len()).any(|w| w == needle) {
        return true;
    }
    let magic = [0x28, 0xb5, 0x2f, 0xfd];
    for (i, _) in bytes.windows(4).enumerate().filter(|(_, w)| *w == magic) {
        let mut d = match zstd::stream::read::Decoder::new(&bytes[i..]) {
            Ok(d) => d.single_frame(),
            Err(_) => continue,
        };
        let mut out = Vec::new();
        let _ = d.read_to_end(&mut out);
        if out.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// The objects of a local repository that hold the canary.
fn canary_objects(repo: &str) -> Vec<String> {
    files(Path::new(repo))
        .into_iter()
        .filter(|p| holds_canary(&fs::read(p).unwrap()))
        .map(|p| p.display().to_string())
        .collect()
}

/// Dump, backup and streamed WAL with the canary into `repo`; returns the
/// backup id and the last segment archived.
fn fill_repository(pg: &PgCluster, repo: &str, slot: &str, dir: &Path) -> (String, String) {
    let conn = pg.conninfo("postgres", "postgres");
    pgtide(&["dump", "--db", &conn, "--repo", repo]).assert_ok();
    let streamer = Streamer::start(&conn, repo, slot, dir);
    wait_until(
        pg,
        "the streamer's slot is active",
        &format!("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}' AND active)"),
    );
    let b = pgtide(&["backup", "--json", "--db", &conn, "--repo", repo]);
    b.assert_ok();
    let id = json(&b)["id"].as_str().unwrap().to_string();
    pg.execute(
        "postgres",
        &format!("CREATE TABLE {slot}_after AS SELECT '{CANARY} in WAL ' || g AS s FROM generate_series(1, 500) g"),
    );
    let last = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(repo, &last);
    streamer.stop();
    (id, last)
}

#[test]
fn an_encrypted_repository_holds_no_canary_and_restores_with_its_identity() {
    let pg = canary_cluster();
    let work = work_dir("pgtide-enc-");
    let (identity, recipient) = keypair(work.path(), "reader.key");
    // The server's restore_command reads it as the server's user.
    crate::harness::pg::give_to_server_user(Path::new(&identity));
    let (stranger, _) = keypair(work.path(), "stranger.key");

    // The scan finds the canary where it is stored in plaintext.
    let plain = path_in(&work, "plain");
    fill_repository(&pg, &plain, "plain", work.path());
    let found = canary_objects(&plain);
    assert!(found.iter().any(|p| p.contains("/dumps/")), "{found:?}");
    assert!(found.iter().any(|p| p.contains("/backups/")), "{found:?}");
    assert!(found.iter().any(|p| p.contains("/wal/")), "{found:?}");

    let repo = path_in(&work, "sealed");
    pgtide(&["init", "--repo", &repo, "--recipient", &recipient]).assert_ok();
    // Flags of the other kind are errors, on each kind of repository.
    pgtide(&[
        "verify",
        "latest",
        "--repo",
        &plain,
        "--identity",
        &identity,
    ])
    .assert_one_line_error(2, "is not encrypted");
    pgtide(&["init", "--repo", &repo]).assert_one_line_error(4, "already exists");

    let (backup_id, _) = fill_repository(&pg, &repo, "sealed", work.path());
    assert_eq!(canary_objects(&repo), Vec::<String>::new());
    assert!(!Path::new(&repo)
        .join(format!("backups/{backup_id}/backup_manifest"))
        .exists());

    // Listing needs no key; reading does, and only the right one.
    let l = crate::pitr::listing(&repo);
    assert_eq!(l["dumps"].as_array().unwrap().len(), 1, "{l:#}");
    let target = pg.conninfo("postgres", "back");
    pgtide(&[
        "restore", "latest", "--repo", &repo, "--db", &target, "--create",
    ])
    .assert_one_line_error(11, "no key was given");
    pgtide(&[
        "restore",
        "latest",
        "--repo",
        &repo,
        "--db",
        &target,
        "--create",
        "--identity",
        &stranger,
    ])
    .assert_one_line_error(11, "opens no key");
    pgtide(&[
        "restore",
        "latest",
        "--repo",
        &repo,
        "--db",
        &target,
        "--create",
        "--identity",
        &identity,
    ])
    .assert_ok();
    assert_eq!(
        pg.query_one(
            "back",
            "SELECT count(*) || ':' || md5(string_agg(s, ',' ORDER BY id)) FROM secrets"
        ),
        pg.query_one(
            "postgres",
            "SELECT count(*) || ':' || md5(string_agg(s, ',' ORDER BY id)) FROM secrets"
        )
    );
    assert_eq!(
        pg.query_one(
            "back",
            "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"
        ),
        format!("{CANARY} in a large object")
    );
    Cli::new(["verify", &backup_id, "--repo", &repo])
        .env("PGTIDE_IDENTITY_FILE", &identity)
        .run()
        .assert_ok();

    // Point-in-time restore: the server's restore_command fetches the
    // encrypted WAL with the identity named at restore time.
    let r = crate::pitr::restore(
        &repo,
        &backup_id,
        &["--identity", &identity],
        Some(pg.socket_dir()),
    );
    let conf = fs::read_to_string(r.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("--identity"), "{conf}");
    assert_eq!(r.psql("SELECT count(*) FROM sealed_after"), "500");
    assert_eq!(
        r.psql("SELECT count(*) FROM secrets"),
        "20000",
        "{}",
        r.log()
    );
}

#[test]
fn a_passphrase_repository_on_s3_round_trips_a_dump_and_a_pitr() {
    set_process_env();
    let pg = canary_cluster();
    let work = work_dir("pgtide-enc-s3-");
    let pass = work.path().join("passphrase");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    let pass = pass.to_str().unwrap().to_string();
    let repo = S3Server::moto().fresh_bucket_blocking().url;
    let env = s3_env();
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        let mut c = Cli::new(args);
        for (k, v) in env.iter().chain(extra) {
            c.env(k, v);
        }
        c.run()
    };
    run(
        &["init", "--repo", &repo],
        &[("PGTIDE_PASSPHRASE", "correct horse battery staple")],
    )
    .assert_ok();
    let conn = pg.conninfo("postgres", "postgres");
    run(&["dump", "--db", &conn, "--repo", &repo], &[]).assert_ok();
    let target = pg.conninfo("postgres", "back");
    run(
        &[
            "restore", "latest", "--repo", &repo, "--db", &target, "--create",
        ],
        &[],
    )
    .assert_one_line_error(11, "no key was given");
    run(
        &[
            "restore", "latest", "--repo", &repo, "--db", &target, "--create",
        ],
        &[("PGTIDE_PASSPHRASE", "wrong")],
    )
    .assert_one_line_error(11, "opens no key");
    run(
        &[
            "restore", "latest", "--repo", &repo, "--db", &target, "--create",
        ],
        &[("PGTIDE_PASSPHRASE", "correct horse battery staple")],
    )
    .assert_ok();
    assert_eq!(
        pg.query_one("back", "SELECT count(*) FROM secrets"),
        "20000"
    );

    let streamer = Streamer::start(&conn, &repo, "s3", work.path());
    wait_until(
        &pg,
        "the streamer's slot is active",
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 's3' AND active)",
    );
    let b = run(&["backup", "--json", "--db", &conn, "--repo", &repo], &[]);
    b.assert_ok();
    let id = json(&b)["id"].as_str().unwrap().to_string();
    pg.execute(
        "postgres",
        "CREATE TABLE later AS SELECT g FROM generate_series(1, 77) g",
    );
    let last = switch_wal(|q| pg.query_one("postgres", q));
    wait_archived(&repo, &last);
    streamer.stop();

    let dir = work_dir("pgtide-enc-s3-pitr-");
    let pgdata = dir.path().join("data");
    let port = crate::pitr::free_port();
    let out = run(
        &[
            "restore",
            &id,
            "--repo",
            &repo,
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--passphrase-file",
            &pass,
            "--start",
            "--set",
            &format!("port={port}"),
            "--set",
            &format!("unix_socket_directories={}", pg.socket_dir().display()),
        ],
        &[],
    );
    out.assert_ok();
    let rows = crate::harness::pg::query_port(port, "postgres", "SELECT count(*) FROM later")
        .expect("query the restored server");
    assert_eq!(rows[0][0].as_deref(), Some("77"));
    crate::pitr::stop_server(&pgdata);
}

#[test]
fn key_rotation_and_tampering() {
    let pg = PgCluster::start(15);
    pg.execute(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 30000) g",
    );
    let conn = pg.conninfo("postgres", "postgres");
    let work = work_dir("pgtide-enc-keys-");
    let (k1, r1) = keypair(work.path(), "one.key");
    let (k2, r2) = keypair(work.path(), "two.key");
    let repo = path_in(&work, "repo");
    pgtide(&["init", "--repo", &repo, "--recipient", &r1]).assert_ok();
    let dump = |name: &str| {
        let out = pgtide(&[
            "dump", "--json", "--db", &conn, "--repo", &repo, "--name", name,
        ]);
        out.assert_ok();
        json(&out)["id"].as_str().unwrap().to_string()
    };
    let restore = |id: &str, db: &str, key: &str| {
        pgtide(&[
            "restore",
            id,
            "--repo",
            &repo,
            "--db",
            &pg.conninfo("postgres", db),
            "--create",
            "--identity",
            key,
        ])
    };
    let a = dump("before");
    std::thread::sleep(Duration::from_millis(1100));

    // Adding a key needs a key that opens the repository.
    pgtide(&["key", "add", "--repo", &repo, "--recipient", &r2])
        .assert_one_line_error(11, "no key was given");
    pgtide(&[
        "key",
        "add",
        "--repo",
        &repo,
        "--recipient",
        &r2,
        "--identity",
        &k1,
    ])
    .assert_ok();
    pgtide(&["key", "remove", "--repo", &repo, "--recipient", &r1]).assert_ok();
    let keys = json(&pgtide(&["key", "list", "--json", "--repo", &repo]));
    assert_eq!(keys["current_epoch"], 2, "{keys:#}");
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys:#}");
    pgtide(&["key", "remove", "--repo", &repo, "--recipient", &r2])
        .assert_one_line_error(2, "only key");
    let b = dump("after");

    // The removed key reads what was written before its removal, not after.
    restore(&a, "a1", &k1).assert_ok();
    restore(&b, "b1", &k1).assert_one_line_error(11, "key epoch 2");
    restore(&a, "a2", &k2).assert_ok();
    restore(&b, "b2", &k2).assert_ok();
    assert_eq!(pg.query_one("a2", "SELECT count(*) FROM t"), "30000");

    // Tampering is damage (exit 5), and nothing is loaded.
    let pack = |id: &str| {
        let dir = Path::new(&repo).join(format!("dumps/{id}/packs"));
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.pop().unwrap()
    };
    let damaged = |what: &str, db: &str| {
        let out = restore(&b, db, &k2);
        out.assert_exit(5);
        assert!(
            pg.try_query_as("postgres", db, "SELECT 1").is_err()
                || pg.query_one(db, "SELECT count(*) FROM pg_class WHERE relname = 't'") == "0"
                || pg.query_one(db, "SELECT count(*) FROM t") != "30000",
            "{what}: a damaged dump loaded"
        );
    };
    let original = fs::read(pack(&b)).unwrap();
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    fs::write(pack(&b), &flipped).unwrap();
    damaged("a flipped byte", "t1");

    // The same bytes with a matching CRC: only the seal can tell.
    let manifest_path = Path::new(&repo).join(format!("dumps/{b}/manifest.json"));
    let manifest = fs::read_to_string(&manifest_path).unwrap();
    fs::write(pack(&b), &original).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    m["tables"][0]["parts"][0]["rows"] = 1.into();
    fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
    damaged("an edited manifest", "t2");
    fs::write(&manifest_path, &manifest).unwrap();

    // A pack of another dump in its place (sizes made to match).
    let other = fs::read(pack(&a)).unwrap();
    let mut swapped = other.clone();
    swapped.resize(original.len(), 0);
    fs::write(pack(&b), &swapped).unwrap();
    damaged("a pack from another dump", "t3");
    fs::write(pack(&b), &original[..original.len() - 7]).unwrap();
    damaged("a truncated pack", "t4");
    fs::write(pack(&b), &original).unwrap();
    restore(&b, "t5", &k2).assert_ok();

    // wal push tells the same bytes from different ones without a key.
    let history = work.path().join("00000002.history");
    fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let push = || pgtide(&["wal", "push", "--repo", &repo, history.to_str().unwrap()]);
    push().assert_ok();
    push().assert_ok();
    fs::write(&history, "1\t0/4000000\tno recovery target specified\n").unwrap();
    push().assert_exit(6);
}
