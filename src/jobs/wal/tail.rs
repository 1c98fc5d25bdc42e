//! The streamer's side of the pieces (`repo::wal_pieces`): what the
//! repository holds of the segment being filled, and the uploads that make
//! it hold more.
//!
//! Owns: which bytes go up as a piece, when pieces are merged and removed.
//! Must never: read the replication stream (the session hands over the
//! assembled bytes) or list the archive outside [`Tail::open`].
//!
//! Requests: [`Tail::open`] lists the segment's prefix once (at start,
//! reconnect and timeline switch). After that the tail knows what it
//! wrote: each [`Tail::upload`] with new bytes is one PUT (plus, rarely, a
//! merged piece and one batch delete), none without; a completed segment
//! is one PUT and one batch delete of its pieces.

use bytes::Bytes;

use crate::pg::lsn::{segment_name, Lsn};
use crate::repo::wal_archive::{Pushed, WalArchive, WalError};
use crate::repo::wal_pieces::{self, Written, FOREIGN};

/// Counts of what the tail uploaded, for the job's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Pieces uploaded (merged ones included).
    pub pieces: u64,
    /// Merged pieces among them.
    pub merges: u64,
    /// WAL bytes uploaded in pieces (merged ones included).
    pub piece_bytes: u64,
}

/// What the repository holds of the segment being filled.
#[derive(Debug)]
pub struct Tail {
    seg_size: u64,
    tli: u32,
    segno: u64,
    /// Invariant: the repository durably holds bytes `[0, held)` of the
    /// segment (a PUT for each returned). Never decreases for a segment.
    held: u64,
    /// The pieces of the segment known to be stored, in the order written
    /// (those found by `open` first), with their keys.
    pieces: Vec<(Written, String)>,
    pub stats: TailStats,
}

impl Tail {
    /// The tail of the segment holding `next` on timeline `tli`, with what
    /// the repository already holds of it (one LIST). A gap among stored
    /// pieces is reported; new pieces fill it.
    pub async fn open(
        archive: &WalArchive,
        tli: u32,
        next: Lsn,
        seg_size: u64,
    ) -> Result<Tail, WalError> {
        let segno = next.segno(seg_size);
        let name = segment_name(tli, segno, seg_size);
        let held = archive.pieces(&name).await?;
        if let Some((from, to)) = held.gap {
            // Handled here: the stream re-sends the segment from its
            // start, and the piece uploaded next covers the hole.
            tracing::warn!(
                "WAL segment {name} has a gap: bytes {from}..{to} are missing from the archive \
                 while later bytes are held; the stream fills it"
            );
        }
        let pieces = held
            .all
            .into_iter()
            .map(|p| {
                let w = Written {
                    start: p.start,
                    end: p.end,
                    weight: FOREIGN,
                };
                (w, p.key)
            })
            .collect();
        Ok(Tail {
            seg_size,
            tli,
            segno,
            held: held.end,
            pieces,
            stats: TailStats::default(),
        })
    }

    /// The LSN up to which the repository holds WAL of this segment.
    pub fn held_lsn(&self) -> Lsn {
        Lsn(self.segno * self.seg_size + self.held)
    }

    fn name(&self) -> String {
        segment_name(self.tli, self.segno, self.seg_size)
    }

    /// Store the bytes of `filled` (the segment's bytes `[0, len)` received
    /// so far) that the repository does not hold yet: one piece, and a
    /// merged one when [`wal_pieces::merge_due`] says so. Returns the new
    /// end of what is held, or `None` when there was nothing new.
    pub async fn upload(
        &mut self,
        archive: &WalArchive,
        filled: &[u8],
    ) -> Result<Option<Lsn>, WalError> {
        let len = filled.len() as u64;
        if len <= self.held {
            return Ok(None);
        }
        let name = self.name();
        let data = Bytes::copy_from_slice(&filled[self.held as usize..]);
        let key = archive.put_piece(&name, self.held, data).await?;
        crate::jobs::pause_point("wal-piece-uploaded").await;
        self.stats.pieces += 1;
        self.stats.piece_bytes += len - self.held;
        let w = Written {
            start: self.held,
            end: len,
            weight: 1,
        };
        self.pieces.push((w, key));
        self.held = len;
        while let Some(i) = wal_pieces::merge_due(
            &self
                .pieces
                .iter()
                .map(|(w, _)| w.clone())
                .collect::<Vec<_>>(),
        ) {
            self.merge(archive, filled, i).await?;
        }
        Ok(Some(self.held_lsn()))
    }

    /// Replace `pieces[i..]` by one piece covering them (from byte 0 when
    /// all are merged); the replaced ones are removed once it is stored.
    async fn merge(
        &mut self,
        archive: &WalArchive,
        filled: &[u8],
        i: usize,
    ) -> Result<(), WalError> {
        let start = if i == 0 { 0 } else { self.pieces[i].0.start };
        let end = self.held;
        let weight = self.pieces[i..]
            .iter()
            .map(|(w, _)| w.weight)
            .fold(0u64, u64::saturating_add);
        let data = Bytes::copy_from_slice(&filled[start as usize..end as usize]);
        let key = archive.put_piece(&self.name(), start, data).await?;
        self.stats.pieces += 1;
        self.stats.merges += 1;
        self.stats.piece_bytes += end - start;
        let gone: Vec<String> = self
            .pieces
            .drain(i..)
            .map(|(_, k)| k)
            .filter(|k| *k != key)
            .collect();
        self.pieces.push((Written { start, end, weight }, key));
        archive.delete_pieces(&gone).await
    }

    /// Segment `data` of this tail is complete: archive it whole, remove
    /// its pieces, and go on to the next segment (which holds nothing yet:
    /// no LIST).
    pub async fn complete(
        &mut self,
        archive: &WalArchive,
        name: &str,
        segno: u64,
        data: Bytes,
    ) -> Result<Pushed, WalError> {
        let keys: Vec<String> = if segno == self.segno {
            self.pieces.drain(..).map(|(_, k)| k).collect()
        } else {
            Vec::new()
        };
        let pushed = archive.push_segment(name, data, &keys).await?;
        self.segno = segno + 1;
        self.held = 0;
        self.pieces.clear();
        Ok(pushed)
    }
}
