//! `wal push` / `wal fetch` on synthesized segments (valid long page
//! headers, no server needed): idempotent pushes, conflicts, partials, quiet
//! misses, and the prefetch spool.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::cli::{pgtide, Cli};

const SEG: usize = 16 << 20;
const SYSID: u64 = 7_300_000_000_000_000_042;

/// A segment whose first page has a long header naming `SYSID`.
fn segment(tli: u32, segno: u64, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; SEG];
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0006u16.to_le_bytes());
    b[4..8].copy_from_slice(&tli.to_le_bytes());
    b[8..16].copy_from_slice(&(segno * SEG as u64).to_le_bytes());
    b[16..24].fill(0);
    b[24..32].copy_from_slice(&SYSID.to_le_bytes());
    b[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b
}

fn name(tli: u32, segno: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", segno / 256, segno % 256)
}

fn push(repo: &str, dir: &Path, file: &str, data: &[u8]) -> crate::harness::cli::CliOutput {
    let p = dir.join(file);
    std::fs::write(&p, data).unwrap();
    pgtide(&["wal", "push", "--repo", repo, p.to_str().unwrap()])
}

#[test]
fn push_fetch_partials_and_prefetch() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();

    for segno in 1..=4 {
        push(repo, &src, &name(1, segno), &segment(1, segno, segno as u8)).assert_ok();
    }
    // Same bytes again: success. Different bytes: refused, one line, exit 6.
    push(repo, &src, &name(1, 2), &segment(1, 2, 2)).assert_ok();
    push(repo, &src, &name(1, 2), &segment(1, 2, 99))
        .assert_one_line_error(6, "different contents");
    // Not a segment.
    push(repo, &src, &name(1, 9), b"short").assert_one_line_error(2, "not a WAL segment");
    // Another cluster's segment.
    let mut other = segment(1, 5, 5);
    other[24..32].copy_from_slice(&1u64.to_le_bytes());
    push(repo, &src, &name(1, 5), &other).assert_one_line_error(4, "system identifier");
    // A history file and a partial of segment 5.
    push(
        repo,
        &src,
        "00000002.history",
        b"1\t0/5000000\tno recovery target specified\n",
    )
    .assert_ok();
    push(
        repo,
        &src,
        &format!("{}.partial", name(1, 5)),
        &segment(1, 5, 5),
    )
    .assert_ok();

    // A data directory: fetch runs with the data directory as its cwd.
    let pgdata = dir.path().join("pgdata");
    std::fs::create_dir_all(pgdata.join("pg_wal")).unwrap();
    let fetch = |f: &str, dest: &str| {
        Cli::new(["wal", "fetch", "--repo", repo, "--prefetch", "2", f, dest])
            .current_dir(&pgdata)
            .run()
    };
    fetch(&name(1, 1), "pg_wal/RECOVERYXLOG").assert_ok();
    assert_eq!(
        std::fs::read(pgdata.join("pg_wal/RECOVERYXLOG")).unwrap(),
        segment(1, 1, 1)
    );
    // The prefetcher brings the next two into the spool.
    let spool = pgdata.join("pg_wal/pgtide-prefetch");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(spool.join(name(1, 2)).exists() && spool.join(name(1, 3)).exists()) {
        assert!(Instant::now() < deadline, "prefetch did not fill the spool");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Served from the spool: the spooled copy moves into place.
    fetch(&name(1, 2), "pg_wal/RECOVERYXLOG").assert_ok();
    assert!(!spool.join(name(1, 2)).exists());
    assert_eq!(
        std::fs::read(pgdata.join("pg_wal/RECOVERYXLOG")).unwrap(),
        segment(1, 2, 2)
    );
    // History files.
    fetch("00000002.history", "pg_wal/RECOVERYHISTORY").assert_ok();
    // Only a partial: served zero-padded to the segment size.
    fetch(&name(1, 5), "pg_wal/RECOVERYXLOG").assert_ok();
    assert_eq!(
        std::fs::metadata(pgdata.join("pg_wal/RECOVERYXLOG"))
            .unwrap()
            .len(),
        SEG as u64
    );
    // Missing: exit 1 and nothing on stderr.
    let out = fetch(&name(1, 6), "pg_wal/RECOVERYXLOG");
    out.assert_exit(1);
    assert!(out.stderr.trim().is_empty(), "{out}");
    let out = fetch("00000003.history", "pg_wal/RECOVERYHISTORY");
    out.assert_exit(1);
    assert!(out.stderr.trim().is_empty(), "{out}");
    // Once the complete segment arrives, it wins over the partial and the
    // partial is gone.
    push(repo, &src, &name(1, 5), &segment(1, 5, 5)).assert_ok();
    let partials: Vec<_> = std::fs::read_dir(repo_dir.join("wal/00000001"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .collect();
    assert!(partials.is_empty());
    // A damaged object stops recovery (exit 126), it does not end it.
    let obj = repo_dir.join("wal/00000001").join(name(1, 4));
    let mut b = std::fs::read(&obj).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    std::fs::write(&obj, b).unwrap();
    // (With a spool of its own: a prefetcher started by an earlier fetch
    // may still be copying the intact object into the data directory's
    // spool, and serving that copy would be right.)
    let fresh_spool = dir.path().join("fresh-spool");
    Cli::new([
        "wal",
        "fetch",
        "--repo",
        repo,
        "--prefetch",
        "0",
        "--spool",
        fresh_spool.to_str().unwrap(),
        &name(1, 4),
        "pg_wal/RECOVERYXLOG",
    ])
    .current_dir(&pgdata)
    .run()
    .assert_one_line_error(126, "damaged");
    // The archive listing shows the timeline.
    let out = pgtide(&["list", "--json", "--repo", repo]);
    let l: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("list --json is not JSON ({e})\n{out}"));
    assert_eq!(l["wal"][0]["segments"], 5);
    assert_eq!(l["system_identifier"], SYSID.to_string());
}

/// A panic in `wal fetch` is a bug like any other, but it exits 126 rather
/// than 70: PostgreSQL takes a restore_command's code up to 125 as "no
/// such segment" and would end recovery early.
#[test]
fn a_panicking_wal_fetch_stops_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    push(repo, dir.path(), &name(1, 1), &segment(1, 1, 1)).assert_ok();
    let dest = dir.path().join("RECOVERYXLOG");
    Cli::new([
        "wal",
        "fetch",
        "--repo",
        repo,
        &name(1, 1),
        dest.to_str().unwrap(),
    ])
    .env("PGTIDE_TEST_PANIC", "wal-fetch")
    .env_remove("RUST_BACKTRACE")
    .run()
    .assert_one_line_error(126, "internal error: test panic at wal-fetch");
    assert!(!dest.exists());
}
