//! `pgtide copy`: complete backups and dumps, and the WAL they need, from
//! one repository into another (any pair of stores).
//!
//! Rules:
//! - Only complete sets (a manifest, no deletion under way) are copied, and
//!   a set's manifest is written last, create-if-absent: until then the
//!   copy is an incomplete set in the target, never listed as restorable.
//! - Every byte is checked on the way: each pack is streamed in pieces and
//!   every chunk's stored CRC32 (from the manifest) is compared, with the
//!   pack's size; each WAL object's header, stored length and CRC32. A
//!   damaged source object is refused (`Damaged`, exit 5) and nothing of it
//!   is written. The target store checks each part it receives (S3 CRC32,
//!   Azure MD5, GCS CRC32C).
//! - Resumable: an object the target already holds with the same size is
//!   not copied again (objects appear whole or not at all in every store);
//!   a set whose manifest is already there is skipped whole.
//! - The target belongs to the same cluster: its `cluster.json` is copied
//!   when it has none, and a target bound to another system identifier is
//!   refused before anything is written. An empty target becomes a
//!   repository.
//! - Memory is bounded: objects move in pieces of `PIECE` bytes, two read
//!   ahead, through the target's streaming writer; `jobs` objects at once.
//!
//! It holds the target's writer lock (taken by the caller) and never
//! writes to the source. Stopped through its cancellation token, it aborts
//! the objects it is writing (nothing half-written becomes visible) and
//! returns `Interrupted`; what it finished stays, for the next run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{JobError, Progress};
use crate::pg::lsn::parse_segment_name;
use crate::repo::manifest::{BackupManifest, DumpManifest, StreamRef};
use crate::repo::wal_archive::{self, WalError, WalName};
use crate::repo::wal_index;
use crate::repo::{layout, ClusterInfo, RepoError, Repository, SetKind};
use crate::storage::{DynStorage, ObjectMeta, StorageError};

/// Bytes read from the source per request.
const PIECE: u64 = 8 * 1024 * 1024;
/// Pieces read ahead of the one being written.
const READ_AHEAD: usize = 2;

/// What to copy: one set, the newest, or everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Id(String),
    Latest,
    All,
}

impl Selection {
    pub fn parse(s: &str) -> Selection {
        match s {
            "latest" => Selection::Latest,
            "all" => Selection::All,
            id => Selection::Id(id.to_string()),
        }
    }
}

/// What happened to one set.
#[derive(Debug, Clone, Serialize)]
pub struct SetCopy {
    pub id: String,
    /// `backup` or `dump`.
    pub kind: &'static str,
    /// `copied`, or `present` when the target already held it whole.
    pub status: &'static str,
    pub objects_copied: u64,
    pub objects_present: u64,
    pub bytes_copied: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WalCopy {
    pub objects_copied: u64,
    pub objects_present: u64,
    pub bytes_copied: u64,
}

/// The `--json` answer of `pgtide copy`.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    /// Oldest first.
    pub sets: Vec<SetCopy>,
    pub wal: WalCopy,
    pub bytes_copied: u64,
    pub seconds: f64,
}

/// How a copied object is checked on the way.
#[derive(Debug, Clone)]
enum Check {
    /// Only its size.
    Size,
    /// A pack: these chunks (offset, stored length, stored CRC32), sorted.
    Pack(Chunks),
    /// A WAL object: header, stored length and CRC32.
    Wal,
}

/// A pack's chunks: (offset, stored length, stored CRC32), sorted by offset.
type Chunks = Arc<Vec<(u64, u64, u32)>>;

/// Why an object was refused.
#[derive(Debug)]
enum Refused {
    Storage(StorageError),
    Damaged(String),
    /// The job was told to stop.
    Stopped,
}

impl From<StorageError> for Refused {
    fn from(e: StorageError) -> Self {
        Refused::Storage(e)
    }
}

/// Feeds pieces of a pack through its chunks' CRC32s.
struct PackChecker {
    chunks: Chunks,
    next: usize,
    pos: u64,
    crc: crc32fast::Hasher,
}

impl PackChecker {
    fn new(chunks: Chunks) -> Self {
        PackChecker {
            chunks,
            next: 0,
            pos: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            let Some(&(off, len, want)) = self.chunks.get(self.next) else {
                // Bytes after the last chunk: not the manifest's concern.
                self.pos += data.len() as u64;
                return Ok(());
            };
            if self.pos < off {
                let skip = (off - self.pos).min(data.len() as u64) as usize;
                data = &data[skip..];
                self.pos += skip as u64;
                continue;
            }
            let take = (off + len - self.pos).min(data.len() as u64) as usize;
            self.crc.update(&data[..take]);
            data = &data[take..];
            self.pos += take as u64;
            if self.pos == off + len {
                let got = std::mem::take(&mut self.crc).finalize();
                if got != want {
                    return Err(format!(
                        "chunk at offset {off} ({len} bytes) has CRC32 {got:08x}, the manifest records {want:08x}"
                    ));
                }
                self.next += 1;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        match self.chunks.get(self.next) {
            None => Ok(()),
            Some(&(off, len, _)) => Err(format!(
                "the object ends at {} bytes, inside or before the chunk at offset {off} ({len} bytes)",
                self.pos
            )),
        }
    }
}

enum Checker {
    Size,
    Pack(PackChecker),
    Wal(wal_archive::ObjectCheck),
}

impl Checker {
    fn new(c: &Check) -> Checker {
        match c {
            Check::Size => Checker::Size,
            Check::Pack(chunks) => Checker::Pack(PackChecker::new(chunks.clone())),
            Check::Wal => Checker::Wal(Default::default()),
        }
    }

    /// Feed a piece on the blocking pool (CRC32 never on reactor threads).
    async fn feed(self, piece: Bytes) -> Result<Checker, String> {
        if matches!(self, Checker::Size) {
            return Ok(self);
        }
        let r = tokio::task::spawn_blocking(move || {
            let mut c = self;
            match &mut c {
                Checker::Size => {}
                Checker::Pack(p) => p.feed(&piece)?,
                Checker::Wal(w) => w.feed(&piece),
            }
            Ok(c)
        })
        .await;
        match r {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self {
            Checker::Size => Ok(()),
            Checker::Pack(p) => p.finish(),
            Checker::Wal(w) => w.finish(),
        }
    }
}

/// What every object copy of a run shares.
#[derive(Clone)]
struct Mover {
    src: DynStorage,
    dst: DynStorage,
    progress: Arc<Progress>,
    cancel: CancellationToken,
}

/// Copy one object of `size` bytes, checked, into `m.dst` (create-if-absent
/// when `if_absent`). Returns the bytes written.
async fn copy_object(
    m: Mover,
    key: String,
    size: u64,
    check: Check,
    if_absent: bool,
) -> Result<u64, Refused> {
    let Mover {
        src,
        dst,
        progress,
        cancel,
    } = m;
    if cancel.is_cancelled() {
        return Err(Refused::Stopped);
    }
    let key = key.as_str();
    let mut checker = Checker::new(&check);
    // Small objects whole (create-if-absent when asked); larger ones in
    // pieces through the streaming writer (their absence was checked).
    if size <= PIECE {
        let data = src.get(key).await?;
        if data.len() as u64 != size {
            return Err(Refused::Damaged(format!(
                "{key} has {} bytes, {size} were expected",
                data.len()
            )));
        }
        checker = checker.feed(data.clone()).await.map_err(Refused::Damaged)?;
        checker.finish().map_err(Refused::Damaged)?;
        if if_absent {
            dst.put_if_absent(key, data).await?;
        } else {
            dst.put(key, data).await?;
        }
        progress.add_bytes(size);
        return Ok(size);
    }
    let ranges: Vec<(u64, u64)> = (0..size.div_ceil(PIECE))
        .map(|i| (i * PIECE, PIECE.min(size - i * PIECE)))
        .collect();
    let mut pieces = futures::stream::iter(ranges)
        .map(|(off, len)| {
            let src = src.clone();
            let key = key.to_string();
            async move { src.get_range(&key, off, len).await }
        })
        .buffered(READ_AHEAD);
    let mut w = dst.writer(key).await?;
    let result: Result<Checker, Refused> = async {
        let mut checker = checker;
        while let Some(piece) = pieces.next().await {
            if cancel.is_cancelled() {
                return Err(Refused::Stopped);
            }
            let piece = piece?;
            checker = checker
                .feed(piece.clone())
                .await
                .map_err(Refused::Damaged)?;
            let n = piece.len() as u64;
            w.write(piece).await?;
            progress.add_bytes(n);
        }
        Ok(checker)
    }
    .await;
    let finished = match result {
        Ok(checker) => checker.finish().map_err(Refused::Damaged),
        Err(e) => Err(e),
    };
    if let Err(e) = finished {
        let _ = w.abort().await;
        return Err(e);
    }
    let n = w.finish().await?;
    if n != size {
        return Err(Refused::Storage(StorageError::Service {
            op: "copy",
            key: key.to_string(),
            message: format!("wrote {n} bytes of {size}"),
            retryable: true,
        }));
    }
    Ok(n)
}

/// Bind the target to the source's cluster, or check it is bound to it.
async fn copy_cluster(from: &Repository, to: &Repository) -> Result<(), JobError> {
    let Some(src) = from.cluster().await? else {
        return Ok(());
    };
    let check = |t: ClusterInfo| -> Result<(), JobError> {
        if t.system_identifier != src.system_identifier {
            return Err(RepoError::OtherCluster {
                location: to.location(),
                repo: t.system_identifier,
                found: src.system_identifier.clone(),
            }
            .into());
        }
        if t.wal_segment_size != src.wal_segment_size {
            return Err(RepoError::SegmentSizeMismatch {
                location: to.location(),
                repo: t.wal_segment_size,
                found: src.wal_segment_size,
            }
            .into());
        }
        Ok(())
    };
    if let Some(t) = to.cluster().await? {
        return check(t);
    }
    let bytes = from
        .storage()
        .get(layout::CLUSTER)
        .await
        .map_err(RepoError::from)?;
    match to.storage().put_if_absent(layout::CLUSTER, bytes).await {
        Ok(()) => Ok(()),
        Err(StorageError::AlreadyExists { .. }) => match to.cluster().await? {
            Some(t) => check(t),
            None => Ok(()),
        },
        Err(e) => Err(RepoError::from(e).into()),
    }
}

/// The chunks of each pack of a set, by pack key, sorted by offset.
fn pack_chunks(
    packs: &[crate::chunk::PackInfo],
    streams: &[(String, &StreamRef)],
) -> HashMap<String, Chunks> {
    let mut by_pack: Vec<Vec<(u64, u64, u32)>> = vec![Vec::new(); packs.len()];
    for (_, s) in streams {
        for c in &s.chunks {
            if let Some(v) = by_pack.get_mut(c.pack as usize) {
                v.push((c.offset, c.stored_len, c.crc_stored));
            }
        }
    }
    packs
        .iter()
        .zip(by_pack)
        .map(|(p, mut v)| {
            v.sort_unstable();
            v.dedup();
            (p.key.clone(), Arc::new(v))
        })
        .collect()
}

/// Sizes of the objects under `prefix` in `s`.
async fn sizes(s: &DynStorage, prefix: &str) -> Result<HashMap<String, u64>, StorageError> {
    Ok(s.list(prefix)
        .await?
        .into_iter()
        .map(|ObjectMeta { key, size }| (key, size))
        .collect())
}

/// A refused object of set `id`: a store failure, or damage (exit 5).
fn refused(id: &str, r: Refused) -> JobError {
    match r {
        Refused::Storage(e) => JobError::Repo(RepoError::Storage(e)),
        Refused::Damaged(what) => JobError::Damaged {
            id: id.to_string(),
            what,
        },
        Refused::Stopped => JobError::Interrupted,
    }
}

/// Copy one complete set.
async fn copy_set(
    from: &Repository,
    to: &Repository,
    kind: SetKind,
    id: &str,
    jobs: usize,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<(SetCopy, Option<BackupManifest>), JobError> {
    let manifest_key = layout::set_manifest(kind, id);
    let manifest_bytes = from
        .storage()
        .get(&manifest_key)
        .await
        .map_err(RepoError::from)?;
    let (chunks, packs, backup) = match kind {
        SetKind::Backup => {
            let m: BackupManifest = from.load(kind, id).await?;
            let c = pack_chunks(&m.packs, &m.streams());
            let p = m.packs.clone();
            (c, p, Some(m))
        }
        SetKind::Dump => {
            let m: DumpManifest = from.load(kind, id).await?;
            (pack_chunks(&m.packs, &m.streams()), m.packs.clone(), None)
        }
    };
    let mut report = SetCopy {
        id: id.to_string(),
        kind: kind.noun(),
        status: "copied",
        objects_copied: 0,
        objects_present: 0,
        bytes_copied: 0,
    };
    let prefix = layout::set_prefix(kind, id);
    let there = sizes(to.storage(), &prefix)
        .await
        .map_err(RepoError::from)?;
    if let Some(&n) = there.get(&manifest_key) {
        if n == manifest_bytes.len() as u64 {
            report.status = "present";
            report.objects_present = there.len() as u64;
            return Ok((report, backup));
        }
    }
    let source = sizes(from.storage(), &prefix)
        .await
        .map_err(RepoError::from)?;
    // Every pack the manifest names, at its recorded size.
    for p in &packs {
        match source.get(&p.key) {
            None => {
                return Err(refused(
                    id,
                    Refused::Damaged(format!("pack {} is missing", p.key)),
                ))
            }
            Some(&s) if s != p.size => {
                return Err(refused(
                    id,
                    Refused::Damaged(format!(
                        "pack {} has {s} bytes, the manifest records {}",
                        p.key, p.size
                    )),
                ))
            }
            _ => {}
        }
    }
    let mut todo: Vec<(String, u64, Check)> = Vec::new();
    for (key, &size) in &source {
        if *key == manifest_key || *key == layout::set_deleting(kind, id) {
            continue;
        }
        if there.get(key) == Some(&size) {
            report.objects_present += 1;
            continue;
        }
        let check = chunks
            .get(key)
            .map_or(Check::Size, |c| Check::Pack(c.clone()));
        todo.push((key.clone(), size, check));
    }
    todo.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    progress.total_bytes.fetch_add(
        todo.iter().map(|t| t.1).sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let m = Mover {
        src: from.storage().clone(),
        dst: to.storage().clone(),
        progress: progress.clone(),
        cancel: cancel.clone(),
    };
    let results: Vec<Result<u64, Refused>> = futures::stream::iter(
        todo.into_iter()
            .map(|(key, size, check)| copy_object(m.clone(), key, size, check, false)),
    )
    .buffer_unordered(jobs.max(1))
    .collect()
    .await;
    for r in results {
        let n = r.map_err(|e| refused(id, e))?;
        report.objects_copied += 1;
        report.bytes_copied += n;
    }
    // Last: from now on the set is complete in the target.
    match to
        .storage()
        .put_if_absent(&manifest_key, manifest_bytes.clone())
        .await
    {
        Ok(()) => {}
        Err(StorageError::AlreadyExists { .. }) => {
            let theirs = to
                .storage()
                .get(&manifest_key)
                .await
                .map_err(RepoError::from)?;
            if theirs != manifest_bytes {
                return Err(JobError::Invalid(format!(
                    "{} {id} in {} has another manifest than in {}: is it another repository's?",
                    kind.noun(),
                    to.location(),
                    from.location()
                )));
            }
        }
        Err(e) => return Err(RepoError::from(e).into()),
    }
    report.objects_copied += 1;
    report.bytes_copied += manifest_bytes.len() as u64;
    Ok((report, backup))
}

/// The WAL objects (keys, sizes) of the source a selection needs: with
/// `all`, every one; otherwise the segments from each backup's first to
/// its last (their partials and `.backup` files too) and every history file.
fn wal_needed(
    source: &BTreeMap<String, u64>,
    backups: &[BackupManifest],
    all: bool,
    seg_size: u64,
) -> Vec<(String, u64)> {
    let ranges: Vec<(u32, u32, u64, u64)> = backups
        .iter()
        .filter_map(|m| {
            let (tli, first) = parse_segment_name(&m.wal_start, m.wal_segment_size)?;
            let (end_tli, last) = parse_segment_name(&m.wal_end, m.wal_segment_size)?;
            Some((tli.min(end_tli), tli.max(end_tli), first, last))
        })
        .collect();
    source
        .iter()
        .filter(|(key, _)| {
            if all {
                return true;
            }
            let name = key.rsplit('/').next().unwrap_or("");
            if name.ends_with(".history") {
                return true;
            }
            // A segment, its pieces (`<segment>.<start>-<end>.piece`, older
            // `<segment>.<len>.partial`) and
            // `.backup` files start with the segment's name.
            let Some((tli, segno)) = name.get(..24).and_then(|s| parse_segment_name(s, seg_size))
            else {
                return false;
            };
            ranges
                .iter()
                .any(|&(t0, t1, a, b)| (t0..=t1).contains(&tli) && (a..=b).contains(&segno))
        })
        .map(|(k, s)| (k.clone(), *s))
        .collect()
}

/// Copy WAL objects; a complete segment replaces the target's pieces of it.
async fn copy_wal(
    from: &Repository,
    to: &Repository,
    needed: Vec<(String, u64)>,
    source: &BTreeMap<String, u64>,
    seg_size: u64,
    jobs: usize,
    m: &Mover,
) -> Result<WalCopy, JobError> {
    let there = sizes(to.storage(), wal_archive::WAL_PREFIX)
        .await
        .map_err(RepoError::from)?;
    let mut report = WalCopy::default();
    let mut todo = Vec::new();
    for (key, size) in needed {
        // A piece (or older partial) whose complete segment the source
        // holds is superseded; the others are copied as they are, and the
        // target's readers assemble them like the source's.
        if let Some(seg_key) = layout::wal_piece_segment(&key) {
            if source.contains_key(seg_key) {
                continue;
            }
        }
        match there.get(&key) {
            Some(&n) if n == size => report.objects_present += 1,
            Some(_) => {
                let name = key.rsplit('/').next().unwrap_or(&key).to_string();
                return Err(JobError::Archive {
                    context: format!("copy WAL into {}", to.location()),
                    source: WalError::Conflict { name },
                });
            }
            None => todo.push((key, size)),
        }
    }
    m.progress.total_bytes.fetch_add(
        todo.iter().map(|t| t.1).sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let results: Vec<(String, Result<u64, Refused>)> =
        futures::stream::iter(todo.into_iter().map(|(key, size)| {
            let mut m = m.clone();
            // Pieces are removed by design once their segment is complete:
            // written without retention, as the streamer writes them.
            if layout::wal_piece_segment(&key).is_some() {
                m.dst = crate::storage::unretained(&m.dst);
            }
            async move {
                let r = copy_object(m, key.clone(), size, Check::Wal, true).await;
                (key, r)
            }
        }))
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    let mut superseded = Vec::new();
    for (key, r) in results {
        match r {
            Ok(n) => {
                report.objects_copied += 1;
                report.bytes_copied += n;
                let name = key.rsplit('/').next().unwrap_or("");
                if let Some(WalName::Segment { .. }) = wal_archive::classify(name, seg_size) {
                    let p = layout::wal_partials_prefix(&key);
                    superseded.extend(there.keys().filter(|k| k.starts_with(&p)).cloned());
                }
            }
            // Another copy (or the target's own archiver) was first.
            Err(Refused::Storage(StorageError::AlreadyExists { .. })) => {
                report.objects_present += 1
            }
            Err(Refused::Storage(e)) => {
                return Err(JobError::Archive {
                    context: format!("copy WAL object {key}"),
                    source: WalError::Storage(e),
                })
            }
            Err(Refused::Damaged(reason)) => {
                return Err(JobError::Archive {
                    context: format!("copy WAL from {}", from.location()),
                    source: WalError::Damaged { key, reason },
                })
            }
            Err(Refused::Stopped) => return Err(JobError::Interrupted),
        }
    }
    if !superseded.is_empty() {
        to.storage()
            .delete_many(&superseded)
            .await
            .map_err(RepoError::from)?;
    }
    Ok(report)
}

/// Copy `selection` from `from` into `to` (opened with create), with the
/// WAL the copied backups need; with `all_wal` (and for `Selection::All`)
/// every WAL object the target lacks.
pub async fn run(
    from: &Repository,
    to: &Repository,
    selection: &Selection,
    all_wal: bool,
    jobs: usize,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<CopyReport, JobError> {
    let all_wal = all_wal || selection == &Selection::All;
    let t0 = Instant::now();
    if from.location() == to.location() {
        return Err(JobError::Invalid(format!(
            "--from and --to are the same repository ({})",
            from.location()
        )));
    }
    let ids: Vec<String> = match selection {
        Selection::All => {
            let mut v = from.ids(SetKind::Backup).await?;
            v.extend(from.ids(SetKind::Dump).await?);
            v.sort_by(|a, b| a[..15].cmp(&b[..15]).then(a.cmp(b)));
            v
        }
        Selection::Latest => vec![from.resolve_any("latest").await?],
        Selection::Id(id) => {
            if !layout::valid_id(id) || SetKind::of_id(id).is_none() {
                return Err(RepoError::BadId {
                    id: id.clone(),
                    kind: "dump or backup",
                }
                .into());
            }
            vec![id.clone()]
        }
    };
    copy_cluster(from, to).await?;
    progress.set_phase("copying");
    let mut sets = Vec::new();
    let mut backups = Vec::new();
    for id in &ids {
        let kind = SetKind::of_id(id).expect("ids are valid");
        if cancel.is_cancelled() {
            return Err(JobError::Interrupted);
        }
        let (r, m) = copy_set(from, to, kind, id, jobs, &progress, &cancel).await?;
        tracing::info!(id = %id, status = r.status, objects = r.objects_copied, "copied");
        sets.push(r);
        backups.extend(m);
    }
    let mut wal = WalCopy::default();
    let cluster = from.cluster().await?;
    if all_wal || !backups.is_empty() {
        let seg_size = cluster
            .as_ref()
            .map(|c| c.wal_segment_size)
            .or_else(|| backups.first().map(|m| m.wal_segment_size));
        if let Some(seg_size) = seg_size {
            progress.set_phase("copying WAL");
            let source: BTreeMap<String, u64> = sizes(from.storage(), wal_archive::WAL_PREFIX)
                .await
                .map_err(RepoError::from)?
                .into_iter()
                // The index describes its own repository: the copy's is
                // built from what it holds by its first reader.
                .filter(|(key, _)| key != wal_index::INDEX_KEY)
                .collect();
            let needed = wal_needed(&source, &backups, all_wal, seg_size);
            let m = Mover {
                src: from.storage().clone(),
                dst: to.storage().clone(),
                progress: progress.clone(),
                cancel: cancel.clone(),
            };
            wal = copy_wal(from, to, needed, &source, seg_size, jobs, &m).await?;
        }
    }
    let bytes_copied = sets.iter().map(|s| s.bytes_copied).sum::<u64>() + wal.bytes_copied;
    Ok(CopyReport {
        from: from.location(),
        to: to.location(),
        sets,
        wal,
        bytes_copied,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_are_checked_chunk_by_chunk_whatever_the_pieces() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let chunks = Arc::new(vec![
            (0, 100, crc32fast::hash(&data[0..100])),
            (100, 400, crc32fast::hash(&data[100..500])),
            (600, 400, crc32fast::hash(&data[600..1000])),
        ]);
        for piece in [1, 3, 99, 100, 101, 1000] {
            let mut c = PackChecker::new(chunks.clone());
            for p in data.chunks(piece) {
                c.feed(p).unwrap();
            }
            c.finish().unwrap();
        }
        let mut bad = data.clone();
        bad[650] ^= 1;
        let mut c = PackChecker::new(chunks.clone());
        let e = c.feed(&bad).unwrap_err();
        assert!(e.contains("chunk at offset 600"), "{e}");
        let mut c = PackChecker::new(chunks);
        c.feed(&data[..700]).unwrap();
        assert!(c.finish().unwrap_err().contains("offset 600"));
    }

    #[test]
    fn wal_for_a_backup_is_its_range_and_every_history() {
        let seg = 16u64 << 20;
        let mut source = BTreeMap::new();
        for k in [
            "wal/00000001/000000010000000000000001",
            "wal/00000001/000000010000000000000002",
            "wal/00000001/000000010000000000000002.00000028.backup",
            "wal/00000001/000000010000000000000003",
            "wal/00000001/000000010000000000000004.00001000.partial",
            "wal/00000002/000000020000000000000004",
            "wal/00000002.history",
        ] {
            source.insert(k.to_string(), 1);
        }
        let m: BackupManifest = serde_json::from_value(serde_json::json!({
            "format_version": 1, "kind": "backup", "id": "20260101-000000F", "label": "l",
            "name": null, "pgtide_version": "0", "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:00:00Z", "system_identifier": "1",
            "server_version": "15", "server_version_num": 150000, "wal_segment_size": seg,
            "timeline": 1, "start_lsn": "0/2000028", "end_lsn": "0/3000100", "end_timeline": 1,
            "wal_start": "000000010000000000000002", "wal_end": "000000010000000000000003",
            "compression": "none", "chunk_size": 1, "tablespaces": [], "files": [],
            "pg_backup_manifest": null, "packs": [],
            "stats": serde_json::to_value(crate::repo::manifest::DumpStats::default()).unwrap()
        }))
        .unwrap();
        let keys: Vec<String> = wal_needed(&source, &[m], false, seg)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "wal/00000001/000000010000000000000002",
                "wal/00000001/000000010000000000000002.00000028.backup",
                "wal/00000001/000000010000000000000003",
                "wal/00000002.history",
            ]
        );
        assert_eq!(wal_needed(&source, &[], true, seg).len(), source.len());
    }
}
