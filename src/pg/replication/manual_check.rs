//! TEMPORARY hand-run check against a live server (not to be committed).
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;

use super::*;
use crate::pg::proto::tar::{EntryKind, TarEvent, TarParser};

fn ci(s: &str) -> ConnInfo {
    ConnInfo::parse(s).unwrap()
}

async fn side_sql(base: &str, sql: &str) {
    let c = crate::pg::connect::connect(&ci(&format!("{base} user=postgres dbname=postgres")), "x")
        .await
        .unwrap();
    c.batch_execute(sql).await.unwrap();
}

#[tokio::test]
#[ignore]
async fn manual_check() {
    let host = std::env::var("MC_HOST").unwrap();
    let port = std::env::var("MC_PORT").unwrap();
    let sockdir = std::env::var("MC_SOCKDIR").unwrap();
    let verify = std::env::var("MC_VERIFYBACKUP").unwrap();
    let out = PathBuf::from(std::env::var("MC_OUT").unwrap());
    let base = format!("host={host} port={port} sslmode=disable");

    // Auth methods.
    for (user, pw) in [
        ("postgres", None),
        ("scram_user", Some("scram-pw")),
        ("md5_user", Some("md5-pw")),
        ("pw_user", Some("pw-pw")),
    ] {
        let s = match pw {
            Some(p) => format!("{base} user={user} password={p}"),
            None => format!("{base} user={user}"),
        };
        let mut c = ReplicationClient::connect(&ci(&s), "mc").await.unwrap();
        let sys = c.identify_system().await.unwrap();
        eprintln!("auth {user}: ok {sys:?} version {}", c.server_version());
        if let Some(p) = pw {
            let bad = format!("{base} user={user} password={p}x");
            let e = ReplicationClient::connect(&ci(&bad), "mc").await.unwrap_err();
            eprintln!("  wrong password: {e}");
            assert!(matches!(e, ReplError::Auth { .. }));
        }
    }
    // TLS and unix socket.
    if let Ok(root) = std::env::var("MC_ROOTCERT") {
        for mode in ["require", "verify-ca", "verify-full"] {
            let s = format!("host=localhost port={port} user=scram_user password=scram-pw sslmode={mode} sslrootcert={root}");
            let mut c = ReplicationClient::connect(&ci(&s), "mc").await.unwrap();
            c.identify_system().await.unwrap();
            eprintln!("tls {mode}: ok");
        }
        let s = format!("host=127.0.0.1 port={port} user=postgres sslmode=verify-full sslrootcert={root}");
        let e = ReplicationClient::connect(&ci(&s), "mc").await.unwrap_err();
        eprintln!("tls verify-full wrong name: {e}");
    }
    let mut c = ReplicationClient::connect(&ci(&format!("host={sockdir} port={port} user=postgres")), "mc")
        .await
        .unwrap();
    eprintln!("unix socket: {:?}", c.identify_system().await.unwrap());
    eprintln!("SHOW wal_segment_size = {}", c.show("wal_segment_size").await.unwrap());
    let seg = parse_size_setting(&c.show("wal_segment_size").await.unwrap()).unwrap();

    // Errors.
    let e = ReplicationClient::connect(&ci(&format!("{base} user=norepl_user")), "mc")
        .await
        .unwrap_err();
    eprintln!("no replication role: {e}");
    assert!(matches!(e, ReplError::NoReplicationPrivilege { .. }));
    let e = ReplicationClient::connect(&ci(&format!("{base} user=nohba_user")), "mc")
        .await
        .unwrap_err();
    eprintln!("no pg_hba line: {e}");
    assert!(matches!(e, ReplError::NoReplicationPrivilege { .. }));
    let e = c.drop_slot("missing_slot", false).await.unwrap_err();
    eprintln!("drop missing: {e}");
    assert!(matches!(e, ReplError::SlotMissing { .. }));
    assert_eq!(c.read_slot("missing_slot").await.unwrap(), None);
    let e = c.start_physical(Some("missing_slot"), Lsn(0), 0).await.unwrap_err();
    eprintln!("start on missing slot: {e}");
    let r = c.create_physical_slot("mc_perm", false, true).await.unwrap();
    eprintln!("created mc_perm: {r:?}; read {:?}", c.read_slot("mc_perm").await.unwrap());
    let e = c.create_physical_slot("mc_perm", false, true).await.unwrap_err();
    eprintln!("create twice: {e}");
    assert!(matches!(e, ReplError::SlotExists { .. }));

    // Streaming with a temporary slot across pg_switch_wal().
    let sys = c.identify_system().await.unwrap();
    let reserved = c.create_physical_slot("mc_tmp", true, true).await.unwrap();
    eprintln!("temporary slot reserved from {reserved:?}");
    let start = sys.xlogpos.segment_start(seg);
    c.start_physical(Some("mc_tmp"), start, sys.timeline).await.unwrap();
    // A second receiver on the same slot.
    let mut c2 = ReplicationClient::connect(&ci(&format!("{base} user=postgres")), "mc").await.unwrap();
    c2.start_physical(Some("mc_perm"), start, sys.timeline).await.unwrap();
    let mut c3 = ReplicationClient::connect(&ci(&format!("{base} user=postgres")), "mc").await.unwrap();
    let e = c3.start_physical(Some("mc_perm"), start, sys.timeline).await.unwrap_err();
    eprintln!("slot in use: {e}");
    assert!(matches!(e, ReplError::SlotInUse { .. }));
    c2.stop_streaming().await.unwrap();
    c2.drop_slot("mc_perm", false).await.unwrap();

    let b2 = base.clone();
    let gen = tokio::spawn(async move {
        for _ in 0..3 {
            side_sql(&b2, "CREATE TABLE IF NOT EXISTS mc(x int); INSERT INTO mc SELECT generate_series(1,1000); SELECT pg_switch_wal();").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut next = start;
    let mut bytes = 0u64;
    let mut msgs = 0;
    while next.0 < start.0 + 2 * seg {
        match c.recv_timeout(Duration::from_secs(20)).await.unwrap() {
            Some(ReplEvent::XLogData { start: s, data, .. }) => {
                assert_eq!(s, next, "gap");
                next = Lsn(s.0 + data.len() as u64);
                bytes += data.len() as u64;
                msgs += 1;
            }
            Some(ReplEvent::Keepalive { reply_requested, .. }) => {
                c.send_status(next, next, Lsn(0), false).await.unwrap();
                let _ = reply_requested;
            }
            Some(e) => panic!("{e:?}"),
            None => panic!("no WAL within 20s"),
        }
    }
    c.send_status(next, next, Lsn(0), true).await.unwrap();
    gen.await.unwrap();
    eprintln!("streamed {msgs} XLogData, {bytes} bytes, {start} .. {next} (crossed 2 segments)");
    c.stop_streaming().await.unwrap();
    eprintln!("after stop: {:?}", c.identify_system().await.unwrap());

    // A tablespace, then a base backup with a manifest, extracted with our
    // tar parser and checked by pg_verifybackup.
    if let Ok(ts) = std::env::var("MC_TABLESPACE") {
        side_sql(&base, &format!("CREATE TABLESPACE mc_ts LOCATION '{ts}'")).await;
        side_sql(&base, &format!("CREATE TABLE mc_in_ts(x int) TABLESPACE mc_ts; INSERT INTO mc_in_ts VALUES (1)")).await;
    }
    let opts = BaseBackupOptions {
        label: "manual check".into(),
        fast_checkpoint: true,
        progress: true,
        manifest_checksums: Some("SHA256".into()),
        ..BaseBackupOptions::default()
    };
    c.base_backup(&opts).await.unwrap();
    let data_dir = out.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut parser = None::<(TarParser, PathBuf)>;
    let mut manifest = Vec::new();
    let mut file: Option<std::fs::File> = None;
    let mut symlinks = Vec::new();
    let mut summary = Vec::new();
    let finish_archive = |p: &mut Option<(TarParser, PathBuf)>| {
        if let Some((p, _)) = p.take() {
            p.finish().unwrap();
        }
    };
    while let Some(ev) = c.base_backup_next().await.unwrap() {
        match ev {
            BaseBackupEvent::ArchiveStart { name, tablespace_location } => {
                finish_archive(&mut parser);
                summary.push(format!("archive {name} at {tablespace_location:?}"));
                let dir = match &tablespace_location {
                    None => data_dir.clone(),
                    Some(_) => out.join(name.trim_end_matches(".tar")),
                };
                std::fs::create_dir_all(&dir).unwrap();
                parser = Some((TarParser::new(), dir));
            }
            BaseBackupEvent::ArchiveData(d) => {
                let (p, dir) = parser.as_mut().unwrap();
                let mut buf = BytesMut::from(&d[..]);
                while let Some(t) = p.decode(&mut buf).unwrap() {
                    match t {
                        TarEvent::EntryStart(h) => {
                            let path = dir.join(&h.path);
                            match h.kind {
                                EntryKind::Directory => std::fs::create_dir_all(&path).unwrap(),
                                EntryKind::File => {
                                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                                    file = Some(std::fs::File::create(&path).unwrap());
                                }
                                EntryKind::Symlink { target } => symlinks.push((path, target)),
                                k => panic!("{k:?}"),
                            }
                        }
                        TarEvent::EntryData(b) => {
                            use std::io::Write;
                            file.as_mut().unwrap().write_all(&b).unwrap();
                        }
                        TarEvent::EntryEnd => file = None,
                        TarEvent::End => {}
                    }
                }
            }
            BaseBackupEvent::ManifestStart => {
                finish_archive(&mut parser);
            }
            BaseBackupEvent::ManifestData(d) => manifest.extend_from_slice(&d),
            BaseBackupEvent::Progress(_) => {}
            other => summary.push(format!("{other:?}")),
        }
    }
    for (link, target) in symlinks {
        // Point pg_tblspc/<oid> at the extracted tablespace archive.
        let oid = link.file_name().unwrap().to_string_lossy().into_owned();
        let local = out.join(&oid);
        eprintln!("symlink {} -> {target} (server), {} (local)", link.display(), local.display());
        std::os::unix::fs::symlink(&local, &link).unwrap();
    }
    std::fs::write(data_dir.join("backup_manifest"), &manifest).unwrap();
    for s in summary {
        eprintln!("{s}");
    }
    let status = std::process::Command::new(&verify)
        .arg("--no-parse-wal")
        .arg(&data_dir)
        .status()
        .unwrap();
    assert!(status.success(), "pg_verifybackup failed");
    eprintln!("pg_verifybackup: ok");
    let _ = Path::new("");

    // Server-side compression.
    let opts = BaseBackupOptions {
        server_compression: Some("gzip:1".into()),
        ..BaseBackupOptions::default()
    };
    match c.base_backup(&opts).await {
        Ok(()) => {
            let mut total = 0;
            while let Some(ev) = c.base_backup_next().await.unwrap() {
                match ev {
                    BaseBackupEvent::ArchiveStart { name, .. } => eprintln!("compressed archive {name}"),
                    BaseBackupEvent::ArchiveData(d) => total += d.len(),
                    _ => {}
                }
            }
            eprintln!("compressed backup: {total} bytes");
        }
        Err(e) => eprintln!("server compression refused: {e}"),
    }
    eprintln!("final: {:?}", c.identify_system().await.unwrap());
}
