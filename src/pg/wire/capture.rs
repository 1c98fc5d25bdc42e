//! Re-captures the byte streams in `proto-fixtures/` from a live server.
//! Ignored by default; `proto-fixtures/capture.sh` sets up the servers and
//! runs it (see `proto-fixtures/README.md`).
//!
//! Environment:
//! - `PGTIDE_CAPTURE_CONNINFO`: a trust connection (replication allowed) to
//!   a server that was promoted once, so it runs on timeline 2.
//! - `PGTIDE_CAPTURE_TLI1_LSN`: an LSN on timeline 1 shortly before the
//!   switch (the timeline-end capture starts there).
//! - `PGTIDE_CAPTURE_SCRAM_CONNINFO`, `PGTIDE_CAPTURE_MD5_CONNINFO`: the
//!   same server with a password user of each method (optional).
//! - `PGTIDE_CAPTURE_OUT`: output directory (default `proto-fixtures/`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::{BaseBackupOptions, ReplEvent, WireClient};
use crate::pg::conninfo::ConnInfo;
use crate::pg::lsn::Lsn;

fn out_dir() -> PathBuf {
    std::env::var_os("PGTIDE_CAPTURE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-fixtures")))
}

fn write(kind: &str, name: &str, bytes: &[u8]) {
    let dir = out_dir().join(kind);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
}

/// zstd with a long window: a base backup's databases are near-copies of
/// each other, which a 128 MiB window finds.
fn write_zst(kind: &str, name: &str, bytes: &[u8]) {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    enc.long_distance_matching(true).unwrap();
    enc.window_log(27).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(bytes).unwrap();
    let z = enc.finish().unwrap();
    write(kind, name, &z);
}

fn conninfo(var: &str) -> Option<ConnInfo> {
    let s = std::env::var(var).ok()?;
    Some(ConnInfo::from_cli(Some(&s)).unwrap_or_else(|e| panic!("{var}: {e}")))
}

async fn capture_startup(var: &str, case: &str) -> Option<u32> {
    let ci = conninfo(var)?;
    let mut c = WireClient::connect_tapped(&ci, "pgtide-capture")
        .await
        .unwrap_or_else(|e| panic!("{var}: {e}"));
    let major = c.server_version().major();
    write(
        "auth",
        &format!("{major}-startup-{case}.bin"),
        &c.take_tap(),
    );
    Some(major)
}

/// Inserts rows on a normal session so the walsender has WAL to send.
async fn make_wal(ci: ConnInfo) {
    let ci = ci.with_dbname("postgres");
    let client = crate::pg::connect::connect(&ci, "pgtide-capture-wal")
        .await
        .expect("normal session for WAL generation");
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS capture_t (x int)")
        .await
        .unwrap();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .batch_execute(&format!(
                "INSERT INTO capture_t SELECT g FROM generate_series(1, {}) g",
                10 * (i + 1)
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
#[ignore = "needs a live server: run proto-fixtures/capture.sh"]
async fn recapture_fixtures() {
    let ci = conninfo("PGTIDE_CAPTURE_CONNINFO").expect("set PGTIDE_CAPTURE_CONNINFO");
    capture_startup("PGTIDE_CAPTURE_CONNINFO", "trust").await;
    capture_startup("PGTIDE_CAPTURE_SCRAM_CONNINFO", "scram").await;
    capture_startup("PGTIDE_CAPTURE_MD5_CONNINFO", "md5").await;

    let mut c = WireClient::connect(&ci, "pgtide-capture").await.unwrap();
    let major = c.server_version().major();

    c.start_tap();
    let sys = c.identify_system().await.unwrap();
    write(
        "replication",
        &format!("{major}-command-identify-system.bin"),
        &c.take_tap(),
    );
    eprintln!("{sys:?}");

    if sys.timeline >= 2 {
        c.start_tap();
        let (name, content) = c.timeline_history(2).await.unwrap();
        write(
            "replication",
            &format!("{major}-command-timeline-history.bin"),
            &c.take_tap(),
        );
        eprintln!("{name}: {:?}", String::from_utf8_lossy(&content));
    }

    // A live stream: WAL from inserts, and a keepalive (the capture server
    // runs with a short wal_sender_timeout, so one comes within seconds).
    c.create_physical_slot("pgtide_capture", true, true)
        .await
        .unwrap();
    c.start_tap();
    c.start_physical(Some("pgtide_capture"), sys.xlogpos, sys.timeline)
        .await
        .unwrap();
    let wal = tokio::spawn(make_wal(ci.clone()));
    let (mut xlog, mut keepalives) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (xlog < 3 || keepalives < 1) && tokio::time::Instant::now() < deadline {
        match c.recv_timeout(Duration::from_secs(1)).await.unwrap() {
            Some(ReplEvent::XLogData { .. }) => xlog += 1,
            Some(ReplEvent::Keepalive { .. }) => keepalives += 1,
            Some(e) => panic!("unexpected {e:?}"),
            None => {}
        }
    }
    assert!(
        xlog >= 3 && keepalives >= 1,
        "{xlog} XLogData, {keepalives} keepalives"
    );
    write(
        "replication",
        &format!("{major}-stream-inserts.bin"),
        &c.take_tap(),
    );
    wal.await.unwrap();
    c.stop_streaming().await.unwrap();

    // The end of timeline 1, on a server now on timeline 2.
    if let Ok(lsn) = std::env::var("PGTIDE_CAPTURE_TLI1_LSN") {
        let lsn: Lsn = lsn.parse().unwrap();
        c.start_tap();
        c.start_physical(None, lsn, 1).await.unwrap();
        loop {
            match c.recv().await.unwrap() {
                ReplEvent::EndOfTimeline {
                    next_tli,
                    next_tli_start,
                } => {
                    eprintln!("timeline 1 ends at {next_tli_start}, next {next_tli}");
                    break;
                }
                ReplEvent::Keepalive {
                    reply_requested: true,
                    ..
                } => {}
                _ => {}
            }
        }
        write(
            "replication",
            &format!("{major}-stream-timeline-end.bin"),
            &c.take_tap(),
        );
    }

    // A base backup that the server refuses (MAX_RATE out of range).
    c.start_tap();
    let bad = BaseBackupOptions {
        max_rate_kbps: Some(1),
        ..BaseBackupOptions::default()
    };
    c.base_backup(&bad).await.unwrap();
    let e = loop {
        match c.base_backup_next().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("MAX_RATE 1 accepted"),
            Err(e) => break e,
        }
    };
    eprintln!("refused: {e}");
    write(
        "base_backup",
        &format!("{major}-basebackup-error-max-rate.bin"),
        &c.take_tap(),
    );

    // A whole base backup with a manifest.
    c.start_tap();
    let opts = BaseBackupOptions {
        label: "pgtide fixture".into(),
        fast_checkpoint: true,
        progress: true,
        manifest_checksums: Some("CRC32C".into()),
        ..BaseBackupOptions::default()
    };
    c.base_backup(&opts).await.unwrap();
    let mut events = 0;
    while let Some(_e) = c.base_backup_next().await.unwrap() {
        events += 1;
    }
    let bytes = c.take_tap();
    eprintln!("base backup: {events} events, {} bytes", bytes.len());
    write_zst(
        "base_backup",
        &format!("{major}-basebackup-full.bin.zst"),
        &bytes,
    );
    // The connection is usable afterwards.
    c.identify_system().await.unwrap();
}
