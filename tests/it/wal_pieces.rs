//! WAL pieces and the synchronous archive (issue 13, part 2), against a
//! real PostgreSQL 15 and `pgtide wal stream` as a killable child process
//! (the rig of `wal_faults`).
//!
//! - `synchronous_archive_keeps_every_acknowledged_commit`: with
//!   `synchronous_standby_names = 'pgtide'` and `wal stream --synchronous`,
//!   pgtide and then the server are killed while commits flow; a base
//!   backup taken before, restored and replayed to the end of the archive
//!   (its last segment served from pieces), holds every commit the client
//!   saw acknowledged. Local repository, and the same on S3 (moto); and an
//!   encrypted repository whose pieces `copy all` carries to a second one,
//!   restored from the copy with the identity.
//! - `pieces_follow_the_server_at_one_second`: under load at
//!   `--partial-interval 1s`, the archive reaches each LSN the server had
//!   written (waited for, never timed), the slot never passes it, pieces
//!   stay few and go once their segment is complete, and the archive is
//!   gap-free and equal to the server's files.
//! - `killed_after_a_piece_before_the_status_update`: SIGKILL right after a
//!   piece's PUT returned (the debug hook `PGTIDE_TEST_PAUSE`), before the
//!   server heard of it: started again, the streamer finds the piece with
//!   one LIST and the archive stays gap-free.
//! - `a_missing_middle_piece_is_a_reported_gap`: a piece removed from the
//!   middle of a segment is a gap for `verify` (of a backup ending in that
//!   segment) and for `wal fetch`, which serves only the bytes before it.

use std::time::Duration;

use pgtide::pg::lsn::{parse_segment_name, segment_name};

use crate::harness::cli::Cli;
use crate::harness::s3::S3Server;
use crate::wal_faults::{
    lsn, missing_after_restore, show_lsn, wait_for, Repo, Rig, Streamer, Writer, TLI,
};

/// `restore_from`: restore from this repository after `pgtide copy all`
/// into it, instead of from `repo`.
fn synchronous_archive(repo: Repo, rig: Rig, restore_from: Option<Repo>) {
    let out = rig.scratch("out");
    let conninfo = rig.conninfo(rig.pg.port());
    let mut s = Streamer::start_with(
        &out,
        "sync",
        &conninfo,
        &repo,
        true,
        "30s",
        &["--synchronous", "--application-name", "pgtide"],
        &[],
    );
    rig.wait_streaming(&mut s, None);
    let mut backup = Cli::new(["backup", "--json", "--db", &conninfo, "--repo", &repo.url]);
    for (k, v) in &repo.env {
        backup.env(k, v);
    }
    backup.timeout(Duration::from_secs(300));
    backup.run().assert_ok();

    // From now on every commit waits for pgtide's flush.
    rig.pg.set_conf("synchronous_standby_names", "pgtide");
    wait_for(
        "pgtide to be the synchronous standby",
        Duration::from_secs(60),
        || rig.diag(&s),
        || {
            let rows = rig.pg.query(
                "postgres",
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgtide'",
            );
            (rows.first().and_then(|r| r[0].as_deref()) == Some("sync")).then_some(())
        },
    );
    let writer = Writer::start(&rig.pg, 2 << 10, 400.0);
    // Enough commits to span pieces of more than one segment's worth.
    let from = rig.insert_lsn();
    rig.wait_wal(from, 20 << 20, &s);
    // Killed with commits in flight: those never return to the client;
    // every one that did must be in the archive.
    s.kill9();
    rig.pg.crash();
    let log = writer.stop();
    assert!(
        log.committed.len() > 100,
        "too few commits: {}",
        log.committed.len()
    );
    let repo = match restore_from {
        None => repo,
        Some(copy) => {
            // The tail of the archive is pieces: they are copied too.
            let pieces = repo.piece_files();
            assert!(!pieces.is_empty(), "no pieces to copy");
            let mut cmd = Cli::new(["copy", "all", "--from", &repo.url, "--to", &copy.url]);
            for (k, v) in repo.env.iter().chain(&copy.env) {
                cmd.env(k, v);
            }
            cmd.timeout(Duration::from_secs(300));
            cmd.run().assert_ok();
            assert_eq!(copy.piece_files(), pieces, "the pieces copied");
            copy
        }
    };
    let (missing, restored, _) = missing_after_restore(&repo, &log);
    assert!(
        missing.is_empty(),
        "{} acknowledged commits are missing after restoring backup + archive (first: {:?}, last acknowledged: {:?})\n--- recovery log ---\n{}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        log.committed.last(),
        restored.log(),
        s.describe()
    );
    eprintln!(
        "synchronous archive: {} acknowledged commits, {} failed or cut off, all restored",
        log.committed.len(),
        log.failures
    );
}

#[test]
fn synchronous_archive_keeps_every_acknowledged_commit() {
    let rig = Rig::start();
    let repo = rig.local_repo();
    synchronous_archive(repo, rig, None);
}

#[test]
fn synchronous_archive_keeps_every_acknowledged_commit_on_s3() {
    let bucket = S3Server::moto().fresh_bucket_blocking();
    let rig = Rig::start();
    let repo = Repo::s3(bucket.url.clone());
    synchronous_archive(repo, rig, None);
}

/// The same with an encrypted repository (public-key mode: the streamer
/// holds no secret), its sealed pieces copied to a second, empty
/// repository, and the restore made from the copy with the identity (which
/// `restore_command` passes on to `wal fetch`).
#[test]
fn synchronous_archive_encrypted_restores_from_a_copy() {
    let rig = Rig::start();
    let keys = rig.scratch("keys");
    let identity = keys.join("id.key");
    let out = Cli::new(["key", "generate", "--output", identity.to_str().unwrap()]).run();
    out.assert_ok();
    let recipient = out.stdout.trim().to_string();
    crate::harness::pg::give_to_server_user(&identity);
    let repo = rig.local_repo();
    Cli::new(["init", "--repo", &repo.url, "--recipient", &recipient])
        .run()
        .assert_ok();
    let mut copy = Repo::local(&rig.scratch("copy").join("repo"));
    copy.env.push((
        "PGTIDE_IDENTITY_FILE".to_string(),
        identity.display().to_string(),
    ));
    synchronous_archive(repo, rig, Some(copy));
}

#[test]
fn pieces_follow_the_server_at_one_second() {
    let rig = Rig::start();
    let repo = rig.local_repo();
    let out = rig.scratch("out");
    let conninfo = rig.conninfo(rig.pg.port());
    let mut s = Streamer::start(&out, "1", &conninfo, &repo, true, "1s");
    rig.wait_streaming(&mut s, None);
    let floor = rig.restart_lsn().expect("slot");
    let writer = Writer::start(&rig.pg, 32 << 10, 60.0);
    let mut most = 0;
    let mut rounds = 0;
    let start = rig.insert_lsn();
    while rig.insert_lsn() < start + 2 * rig.seg {
        rounds += 1;
        // What the server has written now must reach the repository
        // without another segment switch: in pieces.
        let target = rig.insert_lsn();
        wait_for(
            &format!("the archive to reach {}", show_lsn(target)),
            Duration::from_secs(120),
            || rig.diag(&s),
            || (repo.held_end(rig.seg) >= target).then_some(()),
        );
        rig.check_slot_behind_archive(&repo, floor, &s);
        let listed = repo.listed();
        for (name, pieces) in repo.piece_files() {
            most = most.max(pieces.len());
            let (_, segno) = parse_segment_name(&name, rig.seg).expect("name");
            // Pieces of a complete segment are removed right after it.
            let complete = listed.as_ref().is_some_and(|l| segno + 1 < l.last);
            assert!(
                !complete,
                "pieces of {name} remain though later segments are complete: {pieces:?}"
            );
        }
    }
    assert!(most <= 64, "{most} pieces for one segment");
    let (log, listed) = rig.finish(&repo, &mut s, writer);
    eprintln!(
        "pieces at 1s: {} rows, {rounds} rounds, at most {most} pieces of a segment at once, archive {listed:?}\n{}",
        log.committed.len(),
        s.stdout().trim()
    );
}

#[test]
fn killed_after_a_piece_before_the_status_update() {
    let rig = Rig::start();
    let repo = rig.local_repo();
    let out = rig.scratch("out");
    let conninfo = rig.conninfo(rig.pg.port());
    let floor = {
        // The slot first, so its position before any fault is known.
        let mut s = Streamer::start(&out, "0", &conninfo, &repo, true, "1s");
        rig.wait_streaming(&mut s, None);
        s.terminate();
        rig.wait_slot_released(&s);
        rig.restart_lsn().expect("slot")
    };
    let mut s = Streamer::start_with(
        &out,
        "1",
        &conninfo,
        &repo,
        false,
        "200ms",
        &[],
        &[("PGTIDE_TEST_PAUSE", "wal-piece-uploaded")],
    );
    rig.wait_streaming(&mut s, None);
    let writer = Writer::start(&rig.pg, 8 << 10, 40.0);
    wait_for(
        "a piece uploaded and the streamer held before its status update",
        Duration::from_secs(120),
        || rig.diag(&s),
        || {
            s.stderr()
                .contains("pgtide test pause: wal-piece-uploaded")
                .then_some(())
        },
    );
    let held = repo.held_end(rig.seg);
    s.kill9();
    rig.check_slot_behind_archive(&repo, floor, &s);
    rig.wait_slot_released(&s);
    let mut s2 = Streamer::start(&out, "2", &conninfo, &repo, false, "1s");
    rig.wait_streaming(&mut s2, None);
    // The piece the killed streamer stored is what the new one starts from.
    assert!(repo.held_end(rig.seg) >= held);
    let from = rig.insert_lsn();
    rig.wait_wal(from, 2 * rig.seg, &s2);
    let (log, listed) = rig.finish(&repo, &mut s2, writer);
    eprintln!(
        "killed after a piece: {} rows, archive {listed:?}",
        log.committed.len()
    );
}

#[test]
fn a_missing_middle_piece_is_a_reported_gap() {
    let rig = Rig::start();
    let repo = rig.local_repo();
    let out = rig.scratch("out");
    let conninfo = rig.conninfo(rig.pg.port());
    let mut s = Streamer::start(&out, "1", &conninfo, &repo, true, "200ms");
    rig.wait_streaming(&mut s, None);
    // A slow writer: the segment fills in many pieces.
    let writer = Writer::start(&rig.pg, 4 << 10, 20.0);
    let from = rig.insert_lsn();
    rig.wait_wal(from, 1 << 20, &s);
    // A backup that waits for its WAL in the archive (the server switches
    // segments at its end, so its last segment is archived whole).
    let mut backup = Cli::new([
        "backup", "--json", "--wal", "archive", "--db", &conninfo, "--repo", &repo.url,
    ]);
    backup.timeout(Duration::from_secs(300));
    let b = backup.run();
    b.assert_ok();
    let v: serde_json::Value = serde_json::from_str(b.stdout.trim()).expect("backup json");
    let id = v["id"].as_str().expect("backup id").to_string();
    let end = lsn(v["end_lsn"].as_str().expect("end_lsn"));
    // Pieces of the next segment, then stop with it open.
    let from = rig.insert_lsn();
    rig.wait_wal(from, 1 << 20, &s);
    let target = rig.insert_lsn();
    wait_for(
        "the archive to reach the server",
        Duration::from_secs(120),
        || rig.diag(&s),
        || (repo.held_end(rig.seg) >= target).then_some(()),
    );
    let _log = writer.stop();
    s.terminate();
    repo.run(&["verify", &id]).assert_ok();

    // `wal fetch` of the open segment with a middle piece removed: a
    // warning naming the bytes, and only the bytes before them served.
    let (name, pieces) = repo
        .piece_files()
        .into_iter()
        .next_back()
        .expect("the open segment has pieces");
    let victim = pieces
        .iter()
        .filter(|p| p.start > 0)
        .min_by_key(|p| p.start)
        .unwrap_or_else(|| panic!("only one piece of {name}: {pieces:?}"))
        .clone();
    let dir = repo
        .local
        .as_ref()
        .expect("local")
        .join(format!("wal/{TLI:08X}"));
    std::fs::remove_file(dir.join(&victim.key)).expect("remove piece");
    let dest = rig.scratch("fetched").join(&name);
    let f = repo.fetch(&name, &dest);
    f.assert_ok();
    let gap = format!("bytes {}..", victim.start);
    assert!(
        f.stderr.contains("gap") && f.stderr.contains(&name) && f.stderr.contains(&gap),
        "wal fetch does not warn of the gap\n{f}"
    );
    let got = std::fs::read(&dest).expect("fetched");
    let theirs = std::fs::read(rig.pg.data_dir().join("pg_wal").join(&name)).expect("pg_wal");
    let at = victim.start as usize;
    assert_eq!(got[..at], theirs[..at], "the prefix before the gap differs");
    assert!(
        got[at..].iter().all(|b| *b == 0),
        "bytes after the gap were served"
    );

    // `verify` of the backup whose last segment is held only as pieces
    // with a hole before the backup's end (written here with the library,
    // as a streamer stopped before pushing the segment would leave them).
    let segno = (end - 1) / rig.seg;
    let last = segment_name(TLI, segno, rig.seg);
    let whole = std::fs::read(rig.pg.data_dir().join("pg_wal").join(&last)).expect("pg_wal");
    let offset = end - segno * rig.seg;
    let (a, b) = (offset / 3, 2 * offset / 3);
    std::fs::remove_file(dir.join(&last)).expect("remove the segment");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let storage: pgtide::storage::DynStorage = std::sync::Arc::new(
            pgtide::storage::LocalFs::new(repo.local.clone().expect("local")),
        );
        let archive = pgtide::repo::wal_archive::WalArchive::new(
            storage,
            rig.seg,
            pgtide::chunk::Compression::Zstd(1),
        );
        for (from, to) in [(0, a), (b, rig.seg)] {
            let bytes = bytes::Bytes::copy_from_slice(&whole[from as usize..to as usize]);
            archive
                .put_piece(&last, from, bytes)
                .await
                .expect("put piece");
        }
    });
    let v = repo.run(&["verify", &id]);
    v.assert_exit(5);
    let gap = format!("bytes {a}..{b}");
    assert!(
        v.stderr.contains(&last) && v.stderr.contains(&gap),
        "verify does not name the gap ({last}, {gap})\n{v}"
    );
}
