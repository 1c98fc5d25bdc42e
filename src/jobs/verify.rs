//! `pgtide verify`: read every object of a dump back and check every chunk's
//! stored length, stored CRC32, decompressed length and content CRC32
//! against the manifest. Reports each missing or damaged object by name.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{JobError, Progress};
use crate::chunk::{ChunkRef, PackInfo};
use crate::pg::lsn::{parse_segment_name, segment_name};
use crate::pipeline::reader::{runs, RUN_SPAN};
use crate::pipeline::Compression;
use crate::pipeline::{ChunkReader, PipelineError};
use crate::repo::manifest::{BackupManifest, StreamRef};
use crate::repo::{Repository, SetKind};

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub id: String,
    pub ok: bool,
    pub packs: u64,
    pub chunks: u64,
    pub bytes_stored: u64,
    pub bytes_raw: u64,
    /// One line per problem: what is wrong and where.
    pub problems: Vec<String>,
    pub seconds: f64,
}

/// Verify set `id`. It only reads: `cancel` stops it wherever it waits
/// (`Interrupted`), leaving nothing behind (a chunk being decoded on the
/// blocking pool finishes there, and its bytes are dropped).
pub async fn run(
    repo: &Repository,
    id: &str,
    jobs: usize,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<VerifyReport, JobError> {
    super::cancellable(&cancel, verify(repo, id, jobs, progress)).await
}

async fn verify(
    repo: &Repository,
    id: &str,
    jobs: usize,
    progress: Arc<Progress>,
) -> Result<VerifyReport, JobError> {
    match SetKind::of_id(id) {
        Some(SetKind::Backup) => {
            let m: BackupManifest = repo.load(SetKind::Backup, id).await?;
            let streams: Vec<(String, StreamRef)> = m
                .streams()
                .into_iter()
                .map(|(w, s)| (w, s.clone()))
                .collect();
            let mut r = check(
                repo,
                SetKind::Backup,
                &m.id,
                &m.packs,
                m.compression,
                streams,
                m.stats.raw_bytes,
                jobs,
                progress,
            )
            .await?;
            // The WAL the backup needs: present, complete and intact.
            let archive = repo.wal_archive(m.wal_segment_size, m.compression);
            // A full listing, which also rebuilds the WAL index from the
            // objects (docs/FORMAT.md): verify trusts no accelerator.
            if let Err(e) = archive.rebuild_index().await {
                r.problems
                    .push(format!("the WAL archive could not be listed: {e}"));
                r.ok = false;
            }
            let (Some((tli, first)), Some((_, last))) = (
                parse_segment_name(&m.wal_start, m.wal_segment_size),
                parse_segment_name(&m.wal_end, m.wal_segment_size),
            ) else {
                r.problems.push(format!(
                    "manifest names an invalid WAL range {}..{}",
                    m.wal_start, m.wal_end
                ));
                r.ok = false;
                return Ok(r);
            };
            let seg = m.wal_segment_size;
            for segno in first..=last {
                let name = segment_name(tli, segno, seg);
                match archive.fetch(&name).await {
                    Ok(Some(d)) if d.len() as u64 == seg => {}
                    Ok(Some(d)) => r
                        .problems
                        .push(format!("WAL segment {name} has {} bytes", d.len())),
                    // Held as pieces only: a backup taken on a standby may
                    // end inside a segment the primary has not completed,
                    // and a streamer may have stopped before pushing a
                    // segment whole. Their prefix will do if it reaches
                    // what the backup needs; a gap is reported.
                    Ok(None) => {
                        let needed = if m.end_lsn.segno(seg) == segno {
                            m.end_lsn.segment_offset(seg).max(1)
                        } else {
                            seg
                        };
                        match archive.fetch_pieces(&name).await {
                            Ok(Some(a)) if a.data.len() as u64 >= needed => {}
                            Ok(Some(a)) => r.problems.push(match a.gap {
                                Some((from, to)) => format!(
                                    "WAL segment {name} has a gap: bytes {from}..{to} are missing \
                                     (the backup needs {needed} bytes of it)"
                                ),
                                None => format!(
                                    "WAL segment {name} is archived only up to byte {} of the {needed} the backup needs",
                                    a.data.len()
                                ),
                            }),
                            Ok(None) => r.problems.push(format!(
                                "WAL segment {name} that the backup needs is missing"
                            )),
                            Err(e) => r.problems.push(format!("WAL segment {name}: {e}")),
                        }
                    }
                    Err(e) => r.problems.push(format!("WAL segment {name}: {e}")),
                }
            }
            r.ok = r.problems.is_empty();
            Ok(r)
        }
        _ => {
            let m = repo.load_dump(id).await?;
            let streams: Vec<(String, StreamRef)> = m
                .streams()
                .into_iter()
                .map(|(w, s)| (w, s.clone()))
                .collect();
            check(
                repo,
                SetKind::Dump,
                &m.id,
                &m.packs,
                m.compression,
                streams,
                m.stats.raw_bytes,
                jobs,
                progress,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn check(
    repo: &Repository,
    kind: SetKind,
    id: &str,
    packs: &[PackInfo],
    compression: Compression,
    streams: Vec<(String, StreamRef)>,
    raw_bytes: u64,
    jobs: usize,
    progress: Arc<Progress>,
) -> Result<VerifyReport, JobError> {
    let started = std::time::Instant::now();
    let mut problems = Vec::new();
    // Packs: present, with the recorded sizes.
    let listed: HashMap<String, u64> = repo
        .storage()
        .list(&crate::repo::layout::set_packs(kind, id))
        .await
        .map_err(|e| JobError::Repo(e.into()))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut bad_pack = vec![false; packs.len()];
    for (i, p) in packs.iter().enumerate() {
        match listed.get(&p.key) {
            None => {
                problems.push(format!("pack {} is missing", p.key));
                bad_pack[i] = true;
            }
            Some(&size) if size != p.size => {
                problems.push(format!(
                    "pack {} has {size} bytes, the manifest records {}",
                    p.key, p.size
                ));
                bad_pack[i] = size < p.size;
            }
            _ => {}
        }
    }
    let reader = ChunkReader::new(
        repo.storage().clone(),
        Arc::new(packs.to_vec()),
        compression,
        1,
    )
    .with_cipher(repo.set_cipher(kind, id)?);
    let mut work = Vec::new();
    for (what, s) in &streams {
        for (n, c) in s.chunks.iter().enumerate() {
            if !bad_pack.get(c.pack as usize).copied().unwrap_or(true) {
                work.push((what.clone(), n, *c));
            }
        }
    }
    progress
        .total_bytes
        .store(work.iter().map(|w| w.2.raw_len).sum(), Ordering::Relaxed);
    progress.set_phase(format!("verifying {} chunks", work.len()));
    let chunks = work.len() as u64;
    // Chunks lying back to back in a pack are read together, one ranged
    // request a run.
    let refs: Vec<ChunkRef> = work.iter().map(|w| w.2).collect();
    let mut work: Vec<Option<(String, usize, ChunkRef)>> = work.into_iter().map(Some).collect();
    let runs: Vec<Vec<(String, usize, ChunkRef)>> = runs(&refs, RUN_SPAN)
        .into_iter()
        .map(|run| run.into_iter().filter_map(|k| work[k].take()).collect())
        .collect();
    let results: Vec<Vec<String>> = futures::stream::iter(runs)
        .map(|run| {
            let reader = reader.clone();
            let progress = progress.clone();
            async move {
                let refs: Vec<ChunkRef> = run.iter().map(|w| w.2).collect();
                // A run that cannot be read is read chunk by chunk, so that
                // only the chunks at fault are reported.
                let fetched: Vec<Option<bytes::Bytes>> = match reader.fetch_run(&refs).await {
                    Ok(stored) => stored.into_iter().map(Some).collect(),
                    Err(_) => vec![None; run.len()],
                };
                let mut problems = Vec::new();
                for ((what, n, c), stored) in run.iter().zip(fetched) {
                    let r = match stored {
                        Some(stored) => reader.decode(c, stored).await,
                        None => reader.read_chunk(c).await,
                    };
                    progress.add_bytes(c.raw_len);
                    crate::jobs::pause_point("verify-chunk").await;
                    match r {
                        Ok(_) => {}
                        Err(PipelineError::Corrupt { pack, offset, kind }) => problems.push(
                            format!("{what}: chunk {n} in {pack} at offset {offset}: {kind}"),
                        ),
                        Err(e) => problems.push(format!("{what}: chunk {n}: {e}")),
                    }
                }
                problems
            }
        })
        .buffer_unordered(jobs.max(1) * 2)
        .collect()
        .await;
    problems.extend(results.into_iter().flatten());
    Ok(VerifyReport {
        id: id.to_string(),
        ok: problems.is_empty(),
        packs: packs.len() as u64,
        chunks,
        bytes_stored: packs.iter().map(|p| p.size).sum(),
        bytes_raw: raw_bytes,
        problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}
