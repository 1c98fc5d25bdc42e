//! Pieces of a WAL segment that is not complete yet: which stored pieces
//! make up the contiguous prefix of the segment, where the first gap is,
//! how their bytes are put together, and when a writer merges them.
//!
//! Owns: the pure rules over piece ranges and bytes. Must never: talk to
//! the store (`wal_archive` lists and fetches; the streamer uploads).
//!
//! A piece holds bytes `[start, end)` of its segment (`layout::wal_piece`);
//! an older `.partial` of length `L` is the piece `[0, L)`. Only the prefix
//! from byte 0 counts: replay needs every byte before the last one it
//! reads. Bytes after a gap are held but never served as if they followed
//! the prefix; the gap is reported. Pieces may overlap (a restarted
//! streamer re-sending from where the prefix ended, a merged piece beside
//! the pieces it replaced): the bytes two pieces hold for the same offsets
//! are identical by construction, and a difference is damage.

use bytes::Bytes;

use super::layout;

/// A stored piece: its key and the byte range of its segment it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub key: String,
    pub start: u64,
    pub end: u64,
}

impl Piece {
    /// The piece a key names (a `.piece` or an older `.partial`).
    pub fn from_key(key: &str) -> Option<Piece> {
        let (start, end) = layout::wal_piece_range(key)?;
        Some(Piece {
            key: key.to_string(),
            start,
            end,
        })
    }
}

/// What the pieces of one segment hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// End of the contiguous prefix `[0, end)` they hold.
    pub end: u64,
    /// The fewest pieces that together hold `[0, end)`, by start.
    pub chosen: Vec<Piece>,
    /// The first hole `[from, to)` after the prefix when later bytes are
    /// held (a piece lost or removed by hand): those later bytes are not
    /// part of the prefix.
    pub gap: Option<(u64, u64)>,
    /// Every piece (for removal once the segment is complete).
    pub all: Vec<Piece>,
}

/// The prefix held by `pieces` (any order; empty ranges ignored).
pub fn held(mut pieces: Vec<Piece>) -> Held {
    pieces.retain(|p| p.start < p.end);
    pieces.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut pos = 0;
    let mut chosen = Vec::new();
    let mut i = 0;
    loop {
        // Of the pieces starting within the prefix, the one reaching furthest.
        let mut best: Option<usize> = None;
        while i < pieces.len() && pieces[i].start <= pos {
            if pieces[i].end > pos && best.is_none_or(|b| pieces[i].end > pieces[b].end) {
                best = Some(i);
            }
            i += 1;
        }
        match best {
            Some(b) => {
                pos = pieces[b].end;
                chosen.push(pieces[b].clone());
            }
            None => break,
        }
    }
    let gap = pieces[i..].first().map(|p| (pos, p.start));
    Held {
        end: pos,
        chosen,
        gap,
        all: pieces,
    }
}

/// Why chosen pieces do not assemble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("piece {key} holds {got} bytes, its name says {want}")]
    Length { key: String, got: u64, want: u64 },
    #[error("pieces {a} and {b} hold different bytes at offset {offset} of the segment")]
    Differ { a: String, b: String, offset: u64 },
    #[error("piece {key} starts at byte {start}, but the pieces before it end at {have}")]
    Gap { key: String, start: u64, have: u64 },
}

/// The bytes `[0, end)` of a segment from the pieces [`held`] chose and
/// their contents. Where two pieces overlap, their bytes must agree.
pub fn assemble(pieces: &[(Piece, Bytes)]) -> Result<Vec<u8>, AssembleError> {
    let end = pieces.iter().map(|(p, _)| p.end).max().unwrap_or(0);
    let mut out: Vec<u8> = Vec::with_capacity(end as usize);
    let mut prev: Option<&Piece> = None;
    for (p, data) in pieces {
        if data.len() as u64 != p.end - p.start {
            return Err(AssembleError::Length {
                key: p.key.clone(),
                got: data.len() as u64,
                want: p.end - p.start,
            });
        }
        let have = out.len() as u64;
        if p.start > have {
            return Err(AssembleError::Gap {
                key: p.key.clone(),
                start: p.start,
                have,
            });
        }
        let overlap = (have.saturating_sub(p.start)).min(p.end - p.start) as usize;
        let at = p.start as usize;
        if out[at..at + overlap] != data[..overlap] {
            let first = (0..overlap).find(|&i| out[at + i] != data[i]).unwrap_or(0);
            return Err(AssembleError::Differ {
                a: prev.map(|q| q.key.clone()).unwrap_or_default(),
                b: p.key.clone(),
                offset: (at + first) as u64,
            });
        }
        out.extend_from_slice(&data[overlap..]);
        prev = Some(p);
    }
    Ok(out)
}

/// A piece the streamer knows of for the segment it fills, with its weight
/// (how many interval uploads it stands for; [`FOREIGN`] for pieces found
/// in the store at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub start: u64,
    pub end: u64,
    pub weight: u64,
}

/// The weight of a piece the streamer did not write in this run.
pub const FOREIGN: u64 = u64::MAX;
/// Trailing pieces of equal weight merged into one (a base-32 counter).
pub const FANOUT: usize = 32;
/// A segment never has more pieces than this: at this many, all are
/// merged into one piece `[0, end)`.
pub const MAX_PIECES: usize = 64;

/// Which of `pieces` (in the order written) to merge now: `Some(i)` merges
/// `pieces[i..]` into one. Under sustained load a segment fills in fewer
/// than [`FANOUT`] pieces and nothing is merged (each byte is uploaded
/// once); a slowly filling segment merges each run of `FANOUT` pieces of
/// one weight into one piece (each byte is uploaded once more per level,
/// about `log32` of the pieces a segment takes), and never keeps more than
/// [`MAX_PIECES`].
pub fn merge_due(pieces: &[Written]) -> Option<usize> {
    let n = pieces.len();
    if n >= MAX_PIECES {
        return Some(0);
    }
    if n < FANOUT {
        return None;
    }
    let w = pieces[n - 1].weight;
    (w != FOREIGN && pieces[n - FANOUT..].iter().all(|p| p.weight == w)).then_some(n - FANOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u64, end: u64) -> Piece {
        Piece {
            key: format!("s.{start:08X}-{end:08X}.piece"),
            start,
            end,
        }
    }

    fn ranges(v: &[Piece]) -> Vec<(u64, u64)> {
        v.iter().map(|p| (p.start, p.end)).collect()
    }

    #[test]
    fn the_prefix_follows_contiguous_pieces() {
        let h = held(vec![p(100, 250), p(0, 100), p(250, 300)]);
        assert_eq!(h.end, 300);
        assert_eq!(ranges(&h.chosen), [(0, 100), (100, 250), (250, 300)]);
        assert_eq!(h.gap, None);
        assert_eq!(held(vec![]), Held::default());
    }

    #[test]
    fn a_missing_middle_piece_is_a_gap_and_ends_the_prefix() {
        let h = held(vec![p(0, 100), p(200, 300), p(300, 400)]);
        assert_eq!(h.end, 100);
        assert_eq!(ranges(&h.chosen), [(0, 100)]);
        assert_eq!(h.gap, Some((100, 200)));
        assert_eq!(h.all.len(), 3);
        // Nothing from byte 0: no prefix at all, and the hole says so.
        let h = held(vec![p(50, 100)]);
        assert_eq!((h.end, h.gap), (0, Some((0, 50))));
    }

    #[test]
    fn overlaps_merged_pieces_and_old_partials_assemble() {
        // An old `.partial` [0, 120), a restarted streamer's pieces from
        // the segment start, and a merged piece.
        let old =
            Piece::from_key("wal/00000001/000000010000000000000003.00000078.partial").unwrap();
        assert_eq!((old.start, old.end), (0, 120));
        let h = held(vec![old, p(0, 100), p(100, 200), p(0, 180), p(150, 260)]);
        assert_eq!(h.end, 260);
        assert_eq!(ranges(&h.chosen), [(0, 180), (150, 260)]);
        let seg: Vec<u8> = (0..260u32).map(|i| (i * 7) as u8).collect();
        let data = |q: &Piece| Bytes::copy_from_slice(&seg[q.start as usize..q.end as usize]);
        let with: Vec<(Piece, Bytes)> = h.chosen.iter().map(|q| (q.clone(), data(q))).collect();
        assert_eq!(assemble(&with).unwrap(), seg);
        // Overlapping bytes that differ are damage, reported with the offset.
        let mut bad = with.clone();
        let mut b = bad[1].1.to_vec();
        b[10] ^= 1;
        bad[1].1 = Bytes::from(b);
        assert_eq!(
            assemble(&bad),
            Err(AssembleError::Differ {
                a: with[0].0.key.clone(),
                b: with[1].0.key.clone(),
                offset: 160
            })
        );
        // A piece shorter than its name says.
        let mut short = with.clone();
        short[0].1 = short[0].1.slice(..5);
        assert!(matches!(
            assemble(&short),
            Err(AssembleError::Length {
                got: 5,
                want: 180,
                ..
            })
        ));
        // Pieces with a hole between them: an error, never a panic.
        let holed = vec![with[1].clone()];
        assert_eq!(
            assemble(&holed),
            Err(AssembleError::Gap {
                key: with[1].0.key.clone(),
                start: 150,
                have: 0
            })
        );
    }

    #[test]
    fn merges_keep_pieces_few_and_bytes_near_the_wal() {
        // Simulate a streamer writing one piece per interval: a run of
        // FANOUT equal pieces becomes one.
        let mut v: Vec<Written> = Vec::new();
        let mut uploaded = 0u64;
        let per = 1000u64;
        let mut end = 0;
        let mut most = 0;
        for _ in 0..5000 {
            v.push(Written {
                start: end,
                end: end + per,
                weight: 1,
            });
            end += per;
            uploaded += per;
            while let Some(i) = merge_due(&v) {
                let w = v[i..]
                    .iter()
                    .map(|w| w.weight)
                    .fold(0u64, u64::saturating_add);
                let m = Written {
                    start: v[i].start,
                    end,
                    weight: w,
                };
                uploaded += m.end - m.start;
                v.truncate(i);
                v.push(m);
            }
            most = most.max(v.len());
            // Always contiguous from 0.
            assert_eq!(v[0].start, 0);
            assert!(v.windows(2).all(|w| w[0].end == w[1].start));
        }
        assert!(most <= MAX_PIECES, "{most} pieces at once");
        // 5000 pieces (83 minutes of a trickle at 1 s): two levels of
        // merging and a few merges at the cap, about four uploads a byte.
        assert!(uploaded <= 9 * end / 2, "{uploaded} bytes for {end}");
        // Fewer pieces than FANOUT: never merged, each byte uploaded once.
        let few: Vec<Written> = (0..FANOUT as u64 - 1)
            .map(|i| Written {
                start: i,
                end: i + 1,
                weight: 1,
            })
            .collect();
        assert_eq!(merge_due(&few), None);
        // Pieces found at start never merge with new ones by weight, but
        // the cap still holds.
        let mut mixed = vec![
            Written {
                start: 0,
                end: 1,
                weight: FOREIGN
            };
            MAX_PIECES - 1
        ];
        assert_eq!(merge_due(&mixed), None);
        mixed.push(Written {
            start: 1,
            end: 2,
            weight: 1,
        });
        assert_eq!(merge_due(&mixed), Some(0));
    }
}
