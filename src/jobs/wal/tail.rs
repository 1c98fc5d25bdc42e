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
    /// Bytes of the objects sent, pieces and segments (compressed,
    /// with their headers): what went over the wire.
    pub sent_bytes: u64,
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
    /// so far) that the repository does not hold yet, as one piece. Returns
    /// the new end of what is held, or `None` when there was nothing new.
    /// Call [`Tail::merge_due`] after (once the server has heard of it).
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
        let (key, sent) = archive.put_piece(&name, self.held, data).await?;
        crate::jobs::pause_point("wal-piece-uploaded").await;
        self.stats.pieces += 1;
        self.stats.sent_bytes += sent;
        self.stats.piece_bytes += len - self.held;
        let w = Written {
            start: self.held,
            end: len,
            weight: 1,
        };
        self.pieces.push((w, key));
        self.held = len;
        Ok(Some(self.held_lsn()))
    }

    /// Merge pieces when [`wal_pieces::merge_due`] says so (rarely: a
    /// segment filling in more than 32 pieces). Changes nothing of what is
    /// held, so it runs after the flush position went to the server.
    pub async fn merge_due(&mut self, archive: &WalArchive, filled: &[u8]) -> Result<(), WalError> {
        // After a reconnection the stream re-sends what is held: merge once
        // the bytes are here again.
        if (filled.len() as u64) < self.held {
            return Ok(());
        }
        loop {
            let written: Vec<Written> = self.pieces.iter().map(|(w, _)| w.clone()).collect();
            let Some(i) = wal_pieces::merge_due(&written) else {
                return Ok(());
            };
            self.merge(archive, filled, i).await?;
        }
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
        let (key, sent) = archive.put_piece(&self.name(), start, data).await?;
        self.stats.pieces += 1;
        self.stats.sent_bytes += sent;
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

    /// Whether the pieces hold the whole segment (a streamer stopped
    /// between its last piece and pushing the segment whole).
    pub fn is_whole(&self) -> bool {
        self.held >= self.seg_size
    }

    /// Archive the segment the pieces hold whole (one GET per piece
    /// chosen, one PUT, one batch delete): at start, so that streaming goes
    /// on after it. The tail is spent.
    pub async fn promote(self, archive: &WalArchive) -> Result<(), WalError> {
        let name = self.name();
        let Some(a) = archive.fetch_pieces(&name).await? else {
            return Ok(());
        };
        let keys: Vec<String> = self.pieces.into_iter().map(|(_, k)| k).collect();
        archive
            .push_segment(&name, a.data.slice(..self.seg_size as usize), &keys)
            .await?;
        tracing::info!(segment = %name, "archived a segment its pieces held whole");
        Ok(())
    }

    /// Segment `data` of this tail is complete: store what the repository
    /// does not hold of it as a piece (so it is durable now), and go on to
    /// the next segment. Returns the keys of the segment's pieces, for
    /// [`WalArchive::push_segment`] once it is pushed whole (by the caller,
    /// in the background: `--synchronous` does not make commits wait for
    /// a whole segment's upload).
    pub async fn finish_segment(
        &mut self,
        archive: &WalArchive,
        segno: u64,
        data: &[u8],
    ) -> Result<Vec<String>, WalError> {
        if segno == self.segno {
            self.upload(archive, data).await?;
        }
        Ok(self.advance(segno))
    }

    /// Go on to the segment after `segno`, which holds nothing yet (no
    /// LIST); the keys of `segno`'s pieces when it is this tail's segment.
    fn advance(&mut self, segno: u64) -> Vec<String> {
        let pieces = std::mem::take(&mut self.pieces);
        let keys = if segno == self.segno {
            pieces.into_iter().map(|(_, k)| k).collect()
        } else {
            Vec::new()
        };
        self.segno = segno + 1;
        self.held = 0;
        keys
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
            self.pieces.iter().map(|(_, k)| k.clone()).collect()
        } else {
            Vec::new()
        };
        let (pushed, sent) = archive.push_segment(name, data, &keys).await?;
        self.stats.sent_bytes += sent;
        self.advance(segno);
        Ok(pushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Compression;
    use crate::storage::DynStorage;

    const SEG: u64 = 1 << 20;

    #[tokio::test]
    async fn pieces_grow_merge_resume_and_give_way_to_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = std::sync::Arc::new(crate::storage::LocalFs::new(dir.path()));
        let a = WalArchive::new(storage, SEG, Compression::Zstd(1));
        let seg: Vec<u8> = (0..SEG as u32).map(|i| (i % 253) as u8).collect();
        let name = segment_name(1, 2, SEG);
        let mut t = Tail::open(&a, 1, Lsn(2 * SEG), SEG).await.unwrap();
        assert_eq!(t.held_lsn(), Lsn(2 * SEG));
        // Nothing new: no upload.
        assert_eq!(t.upload(&a, &[]).await.unwrap(), None);
        for i in 1..=40u64 {
            let end = t.upload(&a, &seg[..(i * 1000) as usize]).await.unwrap();
            assert_eq!(end, Some(Lsn(2 * SEG + i * 1000)));
            t.merge_due(&a, &seg[..(i * 1000) as usize]).await.unwrap();
        }
        assert_eq!(t.stats.merges, 1);
        assert_eq!(t.stats.piece_bytes, 40_000 + 32_000);
        let held = a.pieces(&name).await.unwrap();
        assert_eq!(held.all.len(), 1 + 8, "{:?}", held.all);
        assert_eq!(held.end, 40_000);
        assert_eq!(
            &a.fetch_partial(&name).await.unwrap().unwrap()[..],
            &seg[..40_000]
        );
        // A new streamer finds what is held with one listing and goes on
        // from there, whatever it is re-sent.
        let mut t2 = Tail::open(&a, 1, Lsn(2 * SEG), SEG).await.unwrap();
        assert_eq!(t2.held_lsn(), Lsn(2 * SEG + 40_000));
        assert_eq!(t2.upload(&a, &seg[..30_000]).await.unwrap(), None);
        t2.merge_due(&a, &seg[..30_000]).await.unwrap();
        assert_eq!(
            t2.upload(&a, &seg[..50_000]).await.unwrap(),
            Some(Lsn(2 * SEG + 50_000))
        );
        // The complete segment replaces every piece, old and new.
        let pushed = t2
            .complete(&a, &name, 2, Bytes::from(seg.clone()))
            .await
            .unwrap();
        assert_eq!(pushed, Pushed::Stored);
        assert!(a.pieces(&name).await.unwrap().all.is_empty());
        assert_eq!(t2.held_lsn(), Lsn(3 * SEG));
        assert_eq!(&a.fetch(&name).await.unwrap().unwrap()[..], &seg[..]);
    }

    #[tokio::test]
    async fn a_segment_held_whole_in_pieces_is_promoted_and_finished_segments_hand_over_keys() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = std::sync::Arc::new(crate::storage::LocalFs::new(dir.path()));
        let a = WalArchive::new(storage, SEG, Compression::Zstd(1));
        let seg: Vec<u8> = (0..SEG as u32).map(|i| (i % 241) as u8).collect();
        let name = segment_name(1, 5, SEG);
        // Synchronous: the rest of the segment goes up as a piece, and the
        // keys of all its pieces come back for the push in the background.
        let mut t = Tail::open(&a, 1, Lsn(5 * SEG), SEG).await.unwrap();
        t.upload(&a, &seg[..1000]).await.unwrap();
        let keys = t.finish_segment(&a, 5, &seg).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(t.held_lsn(), Lsn(6 * SEG));
        // Stopped before that push: the next start finds the segment whole
        // in its pieces and archives it.
        let t = Tail::open(&a, 1, Lsn(5 * SEG), SEG).await.unwrap();
        assert!(t.is_whole());
        t.promote(&a).await.unwrap();
        assert_eq!(&a.fetch(&name).await.unwrap().unwrap()[..], &seg[..]);
        assert!(a.pieces(&name).await.unwrap().all.is_empty());
    }
}
