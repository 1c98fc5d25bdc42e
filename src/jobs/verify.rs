//! `pgtide verify`: read every object of a dump back and check every chunk's
//! stored length, stored CRC32, decompressed length and content CRC32
//! against the manifest. Reports each missing or damaged object by name.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use super::{JobError, Progress};
use crate::pipeline::{ChunkReader, PipelineError};
use crate::repo::Repository;

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

pub async fn run(
    repo: &Repository,
    id: &str,
    jobs: usize,
    progress: Arc<Progress>,
) -> Result<VerifyReport, JobError> {
    let started = std::time::Instant::now();
    let m = repo.load_dump(id).await?;
    let mut problems = Vec::new();
    // Packs: present, with the recorded sizes.
    let listed: HashMap<String, u64> = repo
        .storage()
        .list(&crate::repo::layout::dump_packs(&m.id))
        .await
        .map_err(|e| JobError::Repo(e.into()))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut bad_pack = vec![false; m.packs.len()];
    for (i, p) in m.packs.iter().enumerate() {
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
        Arc::new(m.packs.clone()),
        m.compression,
        1,
    );
    let mut work = Vec::new();
    for (what, s) in m.streams() {
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
    let results: Vec<Option<String>> = futures::stream::iter(work)
        .map(|(what, n, c)| {
            let reader = reader.clone();
            let progress = progress.clone();
            async move {
                let r = reader.read_chunk(&c).await;
                progress.add_bytes(c.raw_len);
                match r {
                    Ok(_) => None,
                    Err(PipelineError::Corrupt { pack, offset, kind }) => Some(format!(
                        "{what}: chunk {n} in {pack} at offset {offset}: {kind}"
                    )),
                    Err(e) => Some(format!("{what}: chunk {n}: {e}")),
                }
            }
        })
        .buffer_unordered(jobs.max(1) * 2)
        .collect()
        .await;
    problems.extend(results.into_iter().flatten());
    Ok(VerifyReport {
        id: m.id.clone(),
        ok: problems.is_empty(),
        packs: m.packs.len() as u64,
        chunks,
        bytes_stored: m.packs.iter().map(|p| p.size).sum(),
        bytes_raw: m.stats.raw_bytes,
        problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}
