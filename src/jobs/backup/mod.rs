//! `pgtide backup`: a physical base backup over the replication protocol.
//!
//! BASE_BACKUP's tar streams are parsed as they arrive; every file becomes a
//! stream of chunks in the backup's packs (compressed on all cores), and
//! PostgreSQL's `backup_manifest` is kept. The WAL from the start to the end
//! LSN is streamed alongside through a temporary slot (or, with `--wal
//! archive`, awaited from a running archiver). The manifest is written only
//! once that WAL range is in the repository.
//!
//! Shape: `gather` asks the server who it is (and binds the repository to
//! it), `plan` decides what BASE_BACKUP is asked for and where the WAL
//! comes from, `take` runs it: `receive` the stream, wait for the WAL
//! range, and write the `manifest` built from what was received.

pub mod wal_range;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::Utc;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{JobError, Progress};
use crate::pg::conninfo::ConnInfo;
use crate::pg::lsn::{segment_name, Lsn};
use crate::pg::proto::tar::{EntryKind, TarEvent, TarParser};
use crate::pg::version::ServerVersion;
use crate::pg::wire::{
    parse_size_setting, BaseBackupEvent, BaseBackupOptions, SystemInfo, WireClient, WireError,
};
use crate::pipeline::{PackSet, PackWriter, PipelineConfig, StreamState};
use crate::repo::manifest::{
    BackupFile, BackupManifest, DumpStats, StreamRef, TablespaceEntry, FORMAT_VERSION, KIND_BACKUP,
};
use crate::repo::wal_archive::WalArchive;
use crate::repo::{Repository, SetKind};
use wal_range::{RangeError, RangeStart, RangeStreamer};

/// Where the WAL a backup needs comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalSource {
    /// Streamed by the backup itself through a temporary slot.
    Stream,
    /// Delivered by `wal stream` or `archive_command`; the backup waits.
    Archive,
}

#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub conn: ConnInfo,
    pub pipeline: PipelineConfig,
    pub fast_checkpoint: bool,
    pub manifest_checksums: String,
    pub max_rate_kbps: Option<u32>,
    pub server_compression: Option<String>,
    pub name: Option<String>,
    pub wal: WalSource,
    /// How long to wait for the archiver with `WalSource::Archive`.
    pub wal_wait: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub label: String,
    pub system_identifier: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub wal_start: String,
    pub wal_end: String,
    pub files: u64,
    pub bytes_in: u64,
    pub bytes_stored: u64,
    pub seconds: f64,
    pub mb_per_second: f64,
}

/// Protocol messages received ahead of the archive parser (the server sends
/// base backup data in messages of at most a few tens of KiB).
const RECEIVE_AHEAD: usize = 256;

fn repl(context: &'static str) -> impl FnOnce(WireError) -> JobError {
    move |e| JobError::Replication { context, source: e }
}

fn range_err(e: RangeError) -> JobError {
    match e {
        RangeError::Repl(r) => JobError::Replication {
            context: "stream the backup's WAL",
            source: r,
        },
        RangeError::Wal(w) => JobError::archive("archive the backup's WAL")(w),
        other => JobError::BadStream(format!("stream the backup's WAL: {other}")),
    }
}

pub async fn run(
    repo: &Repository,
    s: &BackupSettings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<BackupReport, JobError> {
    let started = Instant::now();
    let started_at = Utc::now();
    progress.set_phase("connecting");
    let mut client = WireClient::connect(&s.conn, "pgtide backup")
        .await
        .map_err(repl("connect for the base backup"))?;
    let facts = gather(repo, &mut client, started_at).await?;

    let id = repo
        .begin(
            SetKind::Backup,
            &serde_json::json!({
                "kind": KIND_BACKUP,
                "started_at": started_at,
                "system_identifier": facts.system.system_identifier,
                "connection": s.conn.display(),
            }),
        )
        .await?;
    let plan = plan(s, &id);
    let span = tracing::info_span!("job", kind = "backup", id = %id, system = %facts.system.system_identifier);
    let packs = PackSet::new(repo.storage().clone(), repo.pack_keys(SetKind::Backup, &id))
        .with_cipher(repo.new_set_cipher(&id)?);
    // The WAL range's streamer, owned here so that it is stopped and
    // awaited whatever ends the backup.
    let mut streamer = tokio::task::JoinSet::new();
    let result = tokio::select! {
        r = take(repo, s, &mut client, &facts, &plan, &packs, &progress, &mut streamer)
            .instrument(span.clone()) => r,
        _ = cancel.cancelled() => Err(JobError::Interrupted),
    };
    streamer.shutdown().await;
    // The manifests are written here, where nothing drops the writes: a
    // write left on the blocking pool (a local rename) would land after the
    // purge below.
    let result = match result {
        Ok((m, pg_manifest)) => commit(repo, &m, pg_manifest, &progress)
            .instrument(span.clone())
            .await
            .map(|()| m),
        Err(e) => Err(e),
    };
    match result {
        Ok(m) => {
            let secs = started.elapsed().as_secs_f64();
            Ok(BackupReport {
                id: m.id.clone(),
                label: m.label.clone(),
                system_identifier: m.system_identifier.clone(),
                timeline: m.timeline,
                start_lsn: m.start_lsn,
                end_lsn: m.end_lsn,
                wal_start: m.wal_start.clone(),
                wal_end: m.wal_end.clone(),
                files: m.stats.tables,
                bytes_in: m.stats.raw_bytes,
                bytes_stored: m.stats.stored_bytes,
                seconds: secs,
                mb_per_second: m.stats.raw_bytes as f64 / 1e6 / secs.max(1e-9),
            })
        }
        Err(e) => {
            packs.settle().await;
            repo.purge(SetKind::Backup, &id).await;
            Err(e)
        }
    }
}

/// One archive (tar stream) being received: its tablespace and the file
/// being written.
struct ArchiveState {
    tablespace: Option<u32>,
    parser: TarParser,
    buf: BytesMut,
    current: Option<(BackupFile, Option<StreamState>)>,
    /// For server-compressed archives (`base.tar.zst`).
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl ArchiveState {
    /// Append archive bytes, decompressing server-side zstd.
    fn take_in(&mut self, data: &[u8]) -> Result<(), JobError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let Some(d) = self.zstd.as_mut() else {
            self.buf.extend_from_slice(data);
            return Ok(());
        };
        let bad =
            |e: std::io::Error| JobError::BadStream(format!("server-compressed archive: {e}"));
        let mut input = InBuffer::around(data);
        let mut out = vec![0u8; 256 << 10];
        loop {
            let mut ob = OutBuffer::around(&mut out[..]);
            d.run(&mut input, &mut ob).map_err(bad)?;
            let n = ob.pos();
            self.buf.extend_from_slice(&out[..n]);
            if input.pos() >= data.len() && n < out.len() {
                return Ok(());
            }
        }
    }
}

/// What the server says before a backup, and what the plan is built from.
#[derive(Debug, Clone)]
struct Facts {
    version: ServerVersion,
    system: SystemInfo,
    /// The server's `wal_segment_size`, in bytes.
    seg_size: u64,
    /// When the backup started (before connecting).
    started_at: chrono::DateTime<Utc>,
}

/// Ask the server who it is; the repository must belong to this cluster
/// (bound to it if new).
async fn gather(
    repo: &Repository,
    client: &mut WireClient,
    started_at: chrono::DateTime<Utc>,
) -> Result<Facts, JobError> {
    let version = client.server_version();
    if !version.is_supported() {
        return Err(JobError::UnsupportedServer(version));
    }
    let system = client
        .identify_system()
        .await
        .map_err(repl("identify the system"))?;
    let seg_text = client
        .show("wal_segment_size")
        .await
        .map_err(repl("read wal_segment_size"))?;
    let seg_size = parse_size_setting(&seg_text)
        .ok_or_else(|| JobError::BadStream(format!("unexpected wal_segment_size {seg_text:?}")))?;
    repo.bind_cluster(&system.system_identifier, seg_size)
        .await?;
    Ok(Facts {
        version,
        system,
        seg_size,
        started_at,
    })
}

/// A backup, decided before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    id: String,
    /// What BASE_BACKUP is asked for (the label names the backup).
    base_backup: BaseBackupOptions,
    /// Where the WAL from the backup's start to its end comes from, and
    /// how long an archiver is waited for.
    wal: WalSource,
    wal_wait: Duration,
}

fn plan(s: &BackupSettings, id: &str) -> Plan {
    Plan {
        id: id.to_string(),
        base_backup: BaseBackupOptions {
            label: format!("pgtide backup {id}"),
            fast_checkpoint: s.fast_checkpoint,
            // The WAL goes to the archive, not into the backup.
            wal: false,
            manifest_checksums: Some(s.manifest_checksums.clone()),
            max_rate_kbps: s.max_rate_kbps,
            server_compression: s.server_compression.clone(),
            progress: true,
            wait_for_wal_archive: false,
        },
        wal: s.wal,
        wal_wait: s.wal_wait,
    }
}

/// What the base backup stream delivered.
#[derive(Debug, Default)]
struct Received {
    files: Vec<BackupFile>,
    tablespaces: Vec<TablespaceEntry>,
    /// PostgreSQL's `backup_manifest`, as stored in the packs and whole.
    pg_manifest: Option<StreamRef>,
    manifest_bytes: Vec<u8>,
    start_lsn: Lsn,
    end_lsn: Lsn,
    /// Timelines of the start and the end.
    timeline: u32,
    end_timeline: u32,
}

impl Received {
    /// The WAL range the backup needs: its start segment to the segment
    /// holding its end LSN (names of the first and the last).
    fn wal_range(&self, seg_size: u64) -> (String, String) {
        let first = self.start_lsn.segno(seg_size);
        let last = Lsn(self.end_lsn.0.saturating_sub(1).max(self.start_lsn.0)).segno(seg_size);
        (
            segment_name(self.timeline, first, seg_size),
            segment_name(self.end_timeline, last, seg_size),
        )
    }
}

/// Write PostgreSQL's `backup_manifest` as a plain object (not in an
/// encrypted repository, where it would name every file: the copy in the
/// packs is the one) and then the backup's manifest, last.
async fn commit(
    repo: &Repository,
    m: &BackupManifest,
    pg_manifest: Vec<u8>,
    progress: &Progress,
) -> Result<(), JobError> {
    if !repo.encrypted() {
        repo.storage()
            .put(
                &crate::repo::layout::backup_pg_manifest(&m.id),
                pg_manifest.into(),
            )
            .await
            .map_err(|e| JobError::Repo(e.into()))?;
    }
    progress.set_phase("writing the manifest");
    repo.commit(SetKind::Backup, &m.id, m).await?;
    Ok(())
}

/// Run the plan: receive the base backup while the WAL range is streamed
/// (or awaited), check the range is in the archive; the manifest to write
/// and PostgreSQL's `backup_manifest` (see [`commit`]).
#[allow(clippy::too_many_arguments)]
async fn take(
    repo: &Repository,
    s: &BackupSettings,
    client: &mut WireClient,
    facts: &Facts,
    plan: &Plan,
    packs: &PackSet,
    progress: &Arc<Progress>,
    streamer: &mut tokio::task::JoinSet<Result<(), RangeError>>,
) -> Result<(BackupManifest, Vec<u8>), JobError> {
    let archive = repo.wal_archive(facts.seg_size, s.pipeline.compression);
    // The WAL range: a temporary slot before the backup starts; it streams
    // from the backup's start once the server reports it.
    let (start_tx, start_rx) = watch::channel(None::<RangeStart>);
    let (until_tx, until_rx) = watch::channel(None::<Lsn>);
    let (archived_tx, mut archived_rx) = watch::channel(Lsn::INVALID);
    if plan.wal == WalSource::Stream {
        let r = RangeStreamer::prepare(&s.conn).await.map_err(range_err)?;
        streamer.spawn(r.run(archive.clone(), start_rx, until_rx, archived_tx));
    }

    client
        .base_backup(&plan.base_backup)
        .await
        .map_err(repl("start BASE_BACKUP"))?;
    progress.set_phase("receiving the base backup");
    let mut r = receive(client, facts, s.pipeline, packs, &start_tx, progress).await?;
    crate::jobs::pause_point("backup-received").await;

    let (wal_start, wal_end) = r.wal_range(facts.seg_size);
    progress.set_phase(format!(
        "waiting for WAL {wal_start}..{wal_end} to be archived"
    ));
    let (tli, start_lsn, end_lsn) = (r.timeline, r.start_lsn, r.end_lsn);
    match plan.wal {
        WalSource::Stream => {
            until_tx.send_replace(Some(end_lsn));
            // Done when the streamer has archived up to the end, or failed.
            loop {
                if *archived_rx.borrow() >= end_lsn {
                    break;
                }
                tokio::select! {
                    Some(r) = streamer.join_next() => {
                        r.map_err(|e| crate::jobs::task_failed("the WAL streamer", e))?
                            .map_err(range_err)?;
                        break;
                    }
                    _ = archived_rx.changed() => {}
                }
            }
            // Stopped (and awaited) by the caller.
            streamer.abort_all();
        }
        WalSource::Archive => {
            wait_for_archive(&archive, tli, start_lsn, end_lsn, plan.wal_wait).await?
        }
    }
    if let Some(name) = archive
        .missing_in_range(tli, start_lsn, end_lsn)
        .await
        .map_err(JobError::archive("list the WAL archive"))?
    {
        return Err(JobError::WalMissing { segment: name });
    }

    // PostgreSQL's manifest as a plain object too, for pg_verifybackup
    // users (written by `commit`).
    let pg_manifest = std::mem::take(&mut r.manifest_bytes);
    let m = manifest(facts, plan, s, r, packs.packs(), Utc::now());
    Ok((m, pg_manifest))
}

/// The backup's manifest, from what was planned and received.
fn manifest(
    facts: &Facts,
    plan: &Plan,
    s: &BackupSettings,
    r: Received,
    packs: Vec<crate::chunk::PackInfo>,
    finished_at: chrono::DateTime<Utc>,
) -> BackupManifest {
    let (wal_start, wal_end) = r.wal_range(facts.seg_size);
    let raw: u64 = r.files.iter().map(|f| f.size).sum();
    BackupManifest {
        format_version: FORMAT_VERSION,
        kind: KIND_BACKUP.into(),
        id: plan.id.clone(),
        label: plan.base_backup.label.clone(),
        name: s.name.clone(),
        pgtide_version: env!("CARGO_PKG_VERSION").into(),
        started_at: facts.started_at,
        finished_at,
        system_identifier: facts.system.system_identifier.clone(),
        server_version: facts.version.to_string(),
        server_version_num: facts.version.0,
        wal_segment_size: facts.seg_size,
        timeline: r.timeline,
        start_lsn: r.start_lsn,
        end_lsn: r.end_lsn,
        end_timeline: r.end_timeline,
        wal_start,
        wal_end,
        compression: s.pipeline.compression,
        chunk_size: s.pipeline.chunk_size as u64,
        tablespaces: r.tablespaces,
        stats: DumpStats {
            tables: r.files.iter().filter(|f| f.kind == "file").count() as u64,
            rows: 0,
            raw_bytes: raw,
            stored_bytes: packs.iter().map(|p| p.size).sum(),
            seconds: (finished_at - facts.started_at).num_milliseconds() as f64 / 1000.0,
        },
        files: r.files,
        pg_backup_manifest: r.pg_manifest,
        packs,
    }
}

/// Receive the base backup: every file into the packs, PostgreSQL's
/// manifest kept, the start LSN told to the WAL streamer (`start_tx`) as
/// soon as the server reports it. The packs are closed when it returns.
async fn receive(
    client: &mut WireClient,
    facts: &Facts,
    pipeline: PipelineConfig,
    packs: &PackSet,
    start_tx: &watch::Sender<Option<RangeStart>>,
    progress: &Arc<Progress>,
) -> Result<Received, JobError> {
    let mut writer = PackWriter::new(packs.clone(), pipeline);
    let mut r = Received {
        timeline: facts.system.timeline,
        end_timeline: facts.system.timeline,
        start_lsn: Lsn::INVALID,
        end_lsn: Lsn::INVALID,
        ..Received::default()
    };
    let mut ts_locations: Vec<(Option<u32>, Option<String>)> = Vec::new();
    let mut cur: Option<ArchiveState> = None;
    let mut manifest_state: Option<StreamState> = None;
    let pipe = |c: &'static str| JobError::pipeline(c);

    // The socket is read by its own future, a bounded queue ahead of the
    // archive parsing and compression: while chunks are being compressed
    // the server keeps reading files and sending instead of stalling on a
    // full socket buffer.
    {
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel(RECEIVE_AHEAD);
        let receive = async {
            loop {
                let ev = client.base_backup_next().await;
                let last = !matches!(ev, Ok(Some(_)));
                if ev_tx.send(ev).await.is_err() || last {
                    return;
                }
            }
        };
        let work = async {
            while let Some(ev) = ev_rx.recv().await {
                let Some(ev) = ev.map_err(repl("receive the base backup"))? else {
                    break;
                };
                match ev {
                    BaseBackupEvent::Started {
                        start_lsn: l,
                        timeline,
                    } => {
                        r.start_lsn = l;
                        r.timeline = timeline;
                        start_tx.send_replace(Some(RangeStart {
                            lsn: l,
                            tli: timeline,
                        }));
                    }
                    BaseBackupEvent::Tablespaces(list) => {
                        let total: u64 = list.iter().filter_map(|t| t.size).sum::<u64>() * 1024;
                        progress.total_bytes.store(total, Ordering::Relaxed);
                        for t in list {
                            ts_locations.push((t.oid, t.location.clone()));
                            if let (Some(oid), Some(location)) = (t.oid, t.location) {
                                r.tablespaces.push(TablespaceEntry { oid, location });
                            }
                        }
                    }
                    BaseBackupEvent::ArchiveStart {
                        name,
                        tablespace_location,
                    } => {
                        if let Some(a) = cur.take() {
                            finish_archive(a, &mut writer, &mut r.files).await?;
                        }
                        let oid = match &tablespace_location {
                            None => None,
                            Some(loc) => ts_locations
                                .iter()
                                .find(|(_, l)| l.as_deref() == Some(loc.as_str()))
                                .and_then(|(o, _)| *o)
                                .or_else(|| name.trim_end_matches(".tar").parse().ok()),
                        };
                        let zstd = if name.ends_with(".zst") {
                            Some(zstd::stream::raw::Decoder::new().map_err(|e| {
                                JobError::BadStream(format!(
                                    "server-compressed archive {name}: {e}"
                                ))
                            })?)
                        } else if name.ends_with(".tar") {
                            None
                        } else {
                            return Err(JobError::Invalid(format!(
                        "archive {name} is compressed in a way pgtide does not read: use --server-compress zstd"
                    )));
                        };
                        cur = Some(ArchiveState {
                            tablespace: oid,
                            parser: TarParser::new(),
                            buf: BytesMut::new(),
                            current: None,
                            zstd,
                        });
                    }
                    BaseBackupEvent::ArchiveData(data) => {
                        let a = cur.as_mut().ok_or_else(|| {
                            JobError::BadStream("archive data before any archive started".into())
                        })?;
                        progress.add_bytes(data.len() as u64);
                        a.take_in(&data)?;
                        feed(a, &mut writer, &mut r.files).await?;
                    }
                    BaseBackupEvent::Progress(_) => {}
                    BaseBackupEvent::ManifestStart => {
                        if let Some(a) = cur.take() {
                            finish_archive(a, &mut writer, &mut r.files).await?;
                        }
                        manifest_state = Some(writer.begin_stream());
                    }
                    BaseBackupEvent::ManifestData(data) => {
                        let st = manifest_state.as_mut().ok_or_else(|| {
                            JobError::BadStream("manifest data before the manifest started".into())
                        })?;
                        r.manifest_bytes.extend_from_slice(&data);
                        writer
                            .push(st, &data)
                            .await
                            .map_err(pipe("store backup_manifest"))?;
                    }
                    BaseBackupEvent::Finished {
                        end_lsn: l,
                        timeline,
                    } => {
                        r.end_lsn = l;
                        r.end_timeline = timeline;
                    }
                }
            }
            if let Some(a) = cur.take() {
                finish_archive(a, &mut writer, &mut r.files).await?;
            }
            Ok::<(), JobError>(())
        };
        let (work, receive) = (std::pin::pin!(work), std::pin::pin!(receive));
        match futures::future::select(work, receive).await {
            futures::future::Either::Left((r, _)) => r?,
            futures::future::Either::Right(((), work)) => work.await?,
        }
    }
    if let Some(st) = manifest_state.take() {
        r.pg_manifest = Some(
            writer
                .end_stream(st)
                .await
                .map_err(pipe("store backup_manifest"))?
                .into(),
        );
    }
    writer.finish().await.map_err(pipe("close a pack"))?;
    if r.end_lsn == Lsn::INVALID {
        return Err(JobError::BadStream(
            "the server did not report the backup's end LSN".into(),
        ));
    }
    Ok(r)
}

/// Parse what the archive's buffer holds into file streams.
async fn feed(
    a: &mut ArchiveState,
    w: &mut PackWriter,
    files: &mut Vec<BackupFile>,
) -> Result<(), JobError> {
    let pipe = JobError::pipeline;
    while let Some(ev) = a
        .parser
        .decode(&mut a.buf)
        .map_err(|e| JobError::BadStream(format!("base backup tar stream: {e}")))?
    {
        match ev {
            TarEvent::EntryStart(e) => {
                let (kind, target) = match &e.kind {
                    EntryKind::File => ("file", None),
                    EntryKind::Directory => ("dir", None),
                    EntryKind::Symlink { target } => ("symlink", Some(target.clone())),
                    other => {
                        return Err(JobError::BadStream(format!(
                            "unexpected tar entry {:?} for {} in the base backup",
                            other, e.path
                        )))
                    }
                };
                let f = BackupFile {
                    tablespace: a.tablespace,
                    path: e.path.clone(),
                    kind: kind.into(),
                    mode: e.mode,
                    mtime: e.mtime,
                    size: e.size,
                    target,
                    stream: None,
                };
                let st = (kind == "file").then(|| w.begin_stream());
                a.current = Some((f, st));
            }
            TarEvent::EntryData(d) => {
                if let Some((f, Some(st))) = a.current.as_mut() {
                    // Per data message: the context is built only on error.
                    w.push(st, &d)
                        .await
                        .map_err(|e| pipe(format!("store {}", f.path))(e))?;
                }
            }
            TarEvent::EntryEnd => {
                if let Some((mut f, st)) = a.current.take() {
                    if let Some(st) = st {
                        f.stream = Some(
                            w.end_stream(st)
                                .await
                                .map_err(pipe(format!("store {}", f.path)))?
                                .into(),
                        );
                    }
                    files.push(f);
                }
            }
            TarEvent::End => {}
        }
    }
    Ok(())
}

async fn finish_archive(
    mut a: ArchiveState,
    w: &mut PackWriter,
    files: &mut Vec<BackupFile>,
) -> Result<(), JobError> {
    feed(&mut a, w, files).await?;
    if !a.parser.is_done() {
        a.parser
            .finish()
            .map_err(|e| JobError::BadStream(format!("base backup tar stream: {e}")))?;
    }
    Ok(())
}

/// Wait until an archiver has delivered the WAL from `start` to `end` on
/// `tli` (the last segment may be a `.partial` reaching `end`).
async fn wait_for_archive(
    archive: &WalArchive,
    tli: u32,
    start: Lsn,
    end: Lsn,
    wait: Duration,
) -> Result<(), JobError> {
    let deadline = Instant::now() + wait;
    loop {
        let missing = archive
            .missing_in_range(tli, start, end)
            .await
            .map_err(JobError::archive("list the WAL archive"))?;
        let Some(missing) = missing else {
            return Ok(());
        };
        if Instant::now() > deadline {
            let seg = archive.seg_size();
            return Err(JobError::WalNotArchived {
                first: segment_name(tli, start.segno(seg), seg),
                last: segment_name(tli, Lsn(end.0.saturating_sub(1)).segno(seg), seg),
                missing,
                waited_secs: wait.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn received(start: u64, end: u64, tli: u32, end_tli: u32) -> Received {
        Received {
            start_lsn: Lsn(start),
            end_lsn: Lsn(end),
            timeline: tli,
            end_timeline: end_tli,
            ..Received::default()
        }
    }

    #[test]
    fn the_wal_range_ends_at_the_segment_holding_the_end() {
        // Start and end in one segment.
        assert_eq!(
            received(0x0100_0028, 0x0100_0100, 1, 1).wal_range(SEG),
            (
                "000000010000000000000001".into(),
                "000000010000000000000001".into()
            )
        );
        // An end exactly on a boundary is held by the segment before it.
        assert_eq!(
            received(0x0100_0028, 0x0300_0000, 1, 1).wal_range(SEG),
            (
                "000000010000000000000001".into(),
                "000000010000000000000002".into()
            )
        );
        // The end on a newer timeline (a backup of a standby promoted
        // during it) names the last segment on that timeline.
        assert_eq!(
            received(0x0100_0028, 0x0200_0010, 1, 2).wal_range(SEG).1,
            "000000020000000000000002"
        );
    }

    #[test]
    fn the_plan_asks_for_no_wal_in_the_backup_and_names_it() {
        let s = BackupSettings {
            conn: ConnInfo::parse("host=/tmp").unwrap(),
            pipeline: PipelineConfig::default(),
            fast_checkpoint: true,
            manifest_checksums: "CRC32C".into(),
            max_rate_kbps: None,
            server_compression: None,
            name: None,
            wal: WalSource::Archive,
            wal_wait: Duration::from_secs(5),
        };
        let p = plan(&s, "B1");
        assert_eq!(p.base_backup.label, "pgtide backup B1");
        assert!(!p.base_backup.wal && p.base_backup.fast_checkpoint);
        assert_eq!(
            (p.wal, p.wal_wait),
            (WalSource::Archive, Duration::from_secs(5))
        );
    }
}
