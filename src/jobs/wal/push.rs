//! `pgtide wal push <path>`: archive one file PostgreSQL hands to
//! `archive_command` (a segment, a `.partial`, a `.backup` or a `.history`
//! file). The segment's own header names its cluster: a repository bound to
//! another system identifier is refused. Pushing the same bytes twice
//! succeeds; different bytes for an archived segment fail.

use std::path::Path;

use bytes::Bytes;
use serde::Serialize;

use super::WalJobError;
use crate::pg::walpage::parse_segment_header;
use crate::pipeline::Compression;
use crate::repo::wal_archive::{classify, Pushed, WalName};
use crate::repo::Repository;

const DEFAULT_SEG_SIZE: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub name: String,
    /// `stored`, `already-archived` or `partial`.
    pub outcome: &'static str,
    pub bytes: u64,
}

pub async fn push(
    repo: &Repository,
    path: &Path,
    compression: Compression,
) -> Result<PushReport, WalJobError> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| WalJobError::NotSegment {
            path: path.display().to_string(),
            reason: "no file name".into(),
        })?
        .to_string();
    let data = Bytes::from(
        tokio::fs::read(path)
            .await
            .map_err(WalJobError::io(format!("read {}", path.display())))?,
    );
    let (name, partial) = match file_name.strip_suffix(".partial") {
        Some(seg) => (seg.to_string(), true),
        None => (file_name.clone(), false),
    };
    let looks_like_segment = name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let seg_size = if looks_like_segment {
        let h = parse_segment_header(&data).map_err(|reason| WalJobError::NotSegment {
            path: path.display().to_string(),
            reason,
        })?;
        let seg_size = h.segment_size as u64;
        if data.len() as u64 != seg_size {
            return Err(WalJobError::NotSegment {
                path: path.display().to_string(),
                reason: format!(
                    "{} bytes, but its header says segments are {seg_size} bytes",
                    data.len()
                ),
            });
        }
        repo.bind_cluster(&h.system_identifier.to_string(), seg_size)
            .await?;
        seg_size
    } else {
        repo.cluster()
            .await?
            .map(|c| c.wal_segment_size)
            .unwrap_or(DEFAULT_SEG_SIZE)
    };
    let archive = repo.wal_archive(seg_size, compression);
    if classify(&name, seg_size).is_none()
        || (partial && !matches!(classify(&name, seg_size), Some(WalName::Segment { .. })))
    {
        return Err(WalJobError::NotSegment {
            path: path.display().to_string(),
            reason: "not a WAL segment, .partial, .backup or .history file name".into(),
        });
    }
    let bytes = data.len() as u64;
    let outcome = if partial {
        archive.push_partial(&name, data).await?;
        "partial"
    } else {
        match archive.push(&name, data).await? {
            Pushed::Stored => "stored",
            Pushed::AlreadyArchived => "already-archived",
        }
    };
    Ok(PushReport {
        name: file_name,
        outcome,
        bytes,
    })
}
