//! The compact WAL index (`wal/index.json`, docs/FORMAT.md): which complete
//! segments and timeline history files the archive holds, as ranges per
//! timeline, and the greatest key under `wal/` it covers. Readers GET it and
//! list only the keys after `last_key`, so `wal stream` start, restore
//! planning and `list` take a bounded number of requests however long the
//! archive is.
//!
//! Owns: the index's form, building it from keys, merging keys into it
//! (pure). Must never: be needed by a writer to be right (it is an
//! accelerator, rewritten by whoever finds it stale, last writer wins), nor
//! be trusted where a wrong answer loses data: `WalArchive` confirms a
//! segment the index calls missing with the store, and a segment the index
//! lists but the store lacks is found when it is fetched.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::wal_archive::{classify, WalArchive, WalError, WalName, WAL_PREFIX};
use crate::pg::lsn::segment_name;
use crate::storage::StorageError;

/// Where the index lives. It sorts after every timeline directory and
/// history file under `wal/` (`i` > `F`), so a listing after any covered
/// key returns it too, which is harmless.
pub const INDEX_KEY: &str = "wal/index.json";

/// The only form this version writes and reads.
pub const INDEX_FORMAT: u32 = 1;

/// A writer that tracks the archive rewrites the index after this many new
/// complete segments; a reader rewrites it when its tail listing found this
/// many. Bounds the tail a reader lists (a few pages at most) while adding
/// at most one PUT per 256 segments.
pub const REFRESH_EVERY: u64 = 256;

/// Sorted, disjoint, non-adjacent inclusive ranges of segment numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Add `n`; returns true when it was not held.
    pub fn insert(&mut self, n: u64) -> bool {
        // The first range that starts after n.
        let i = self.ranges.partition_point(|&(a, _)| a <= n);
        if i > 0 && self.ranges[i - 1].1 >= n {
            return false;
        }
        let joins_left = i > 0 && self.ranges[i - 1].1 + 1 == n;
        let joins_right = i < self.ranges.len() && n + 1 == self.ranges[i].0;
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = n,
            (false, true) => self.ranges[i].0 = n,
            (false, false) => self.ranges.insert(i, (n, n)),
        }
        true
    }

    pub fn contains(&self, n: u64) -> bool {
        let i = self.ranges.partition_point(|&(a, _)| a <= n);
        i > 0 && self.ranges[i - 1].1 >= n
    }

    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn first(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.0)
    }

    pub fn last(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.1)
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The runs of missing numbers between the first and the last held.
    pub fn gaps(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.windows(2).map(|w| (w[0].1 + 1, w[1].0 - 1))
    }

    /// Every number held (for callers that want a set).
    pub fn to_set(&self) -> BTreeSet<u64> {
        self.ranges.iter().flat_map(|&(a, b)| a..=b).collect()
    }

    /// From ranges as stored: each `a <= b`, sorted, not overlapping.
    fn from_ranges(v: &[[u64; 2]]) -> Result<RangeSet, String> {
        let mut out = RangeSet::default();
        for &[a, b] in v {
            if a > b {
                return Err(format!("range [{a}, {b}] is reversed"));
            }
            if let Some(&(_, prev)) = out.ranges.last() {
                if a <= prev {
                    return Err(format!("range [{a}, {b}] overlaps or is out of order"));
                }
                if a == prev + 1 {
                    out.ranges.last_mut().expect("checked").1 = b;
                    continue;
                }
            }
            out.ranges.push((a, b));
        }
        Ok(out)
    }
}

/// What the archive holds, as one reader or writer sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalView {
    /// Complete segments by timeline.
    pub segments: BTreeMap<u32, RangeSet>,
    /// Timelines with a history file.
    pub histories: BTreeSet<u32>,
    /// The greatest key of a complete segment or history file seen, or
    /// empty. Never a partial, piece or `.backup` key: those sort after
    /// the key of their segment (`…03.00002000.partial` > `…03`), so the
    /// segment completed later would sort before them and be missed.
    pub last_key: String,
}

impl WalView {
    /// Take in one listed key (`wal/...`); returns true when it is a
    /// complete segment not held before.
    pub fn add_key(&mut self, key: &str, seg_size: u64) -> bool {
        let name = key.rsplit('/').next().unwrap_or("");
        let new = match classify(name, seg_size) {
            Some(WalName::Segment { tli, segno }) => {
                self.segments.entry(tli).or_default().insert(segno)
            }
            Some(WalName::History { tli }) => {
                self.histories.insert(tli);
                false
            }
            _ => return false,
        };
        if key > self.last_key.as_str() {
            self.last_key = key.to_string();
        }
        new
    }

    /// The view as stored.
    pub fn to_index(&self, seg_size: u64) -> WalIndex {
        WalIndex {
            format: INDEX_FORMAT,
            segment_size: seg_size,
            last_key: self.last_key.clone(),
            timelines: self
                .segments
                .keys()
                .chain(self.histories.iter())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|&tli| {
                    let segs = self.segments.get(&tli);
                    (
                        format!("{tli:08X}"),
                        TimelineIndex {
                            history: self.histories.contains(&tli),
                            segments: segs
                                .map(|s| s.ranges().iter().map(|&(a, b)| [a, b]).collect())
                                .unwrap_or_default(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// `wal/index.json` (docs/FORMAT.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalIndex {
    pub format: u32,
    pub segment_size: u64,
    pub last_key: String,
    /// By timeline, as 8 hex digits (as in segment names).
    pub timelines: BTreeMap<String, TimelineIndex>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineIndex {
    pub history: bool,
    /// Inclusive ranges of complete segment numbers, ascending.
    pub segments: Vec<[u64; 2]>,
}

impl WalIndex {
    /// Read a stored index; `Err` says why it cannot be used (the caller
    /// then rebuilds it from a full listing).
    pub fn parse(bytes: &[u8], seg_size: u64) -> Result<WalView, String> {
        let idx: WalIndex = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if idx.format != INDEX_FORMAT {
            return Err(format!("index format {} is not {INDEX_FORMAT}", idx.format));
        }
        if idx.segment_size != seg_size {
            return Err(format!(
                "index of {}-byte segments, the cluster's are {seg_size}",
                idx.segment_size
            ));
        }
        if !idx.last_key.is_empty() && !idx.last_key.starts_with(super::layout::WAL) {
            return Err(format!("last key {:?} is not under wal/", idx.last_key));
        }
        let mut view = WalView {
            last_key: idx.last_key,
            ..WalView::default()
        };
        for (t, entry) in idx.timelines {
            let tli = u32::from_str_radix(&t, 16)
                .ok()
                .filter(|_| t.len() == 8)
                .ok_or_else(|| format!("timeline {t:?} is not 8 hex digits"))?;
            if entry.history {
                view.histories.insert(tli);
            }
            let segs =
                RangeSet::from_ranges(&entry.segments).map_err(|e| format!("timeline {t}: {e}"))?;
            if !segs.is_empty() {
                view.segments.insert(tli, segs);
            }
        }
        Ok(view)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the index serializes")
    }
}

/// What a `WalArchive` (and its clones) knows of the archive once it has
/// looked: the view, with what it has pushed since, and how many new
/// segments the stored index lacks.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    view: Option<WalView>,
    unwritten: u64,
}

/// Gap runs `list` confirms with the store before reporting them from the
/// index (one HEAD each).
const GAPS_CONFIRMED: usize = 16;

impl WalArchive {
    /// The stored index, if there is a usable one.
    async fn read_index(&self) -> Result<Option<WalView>, WalError> {
        match self.storage.get(INDEX_KEY).await {
            Ok(bytes) => match WalIndex::parse(&bytes, self.seg_size) {
                Ok(v) => Ok(Some(v)),
                Err(reason) => {
                    // Handled here: an index is only an accelerator; it is
                    // rebuilt from the objects.
                    tracing::warn!("the WAL index {INDEX_KEY} is unusable ({reason}): rebuilding it from a full listing");
                    Ok(None)
                }
            },
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write `view` as the index. A failure is logged, not returned: the
    /// index is an accelerator, and a reader with read-only credentials
    /// must still read.
    async fn store_index(&self, view: &WalView) {
        let bytes = bytes::Bytes::from(view.to_index(self.seg_size).to_bytes());
        // Rewritten by design: never under Object Lock retention.
        if let Err(e) = self.partials.put(INDEX_KEY, bytes).await {
            tracing::debug!("could not write the WAL index {INDEX_KEY}: {e}");
        }
    }

    fn track(&self, view: &WalView, unwritten: u64) {
        let mut t = self.tracker.lock().expect("index tracker lock");
        t.view = Some(view.clone());
        t.unwritten = unwritten;
    }

    async fn full_view(&self) -> Result<WalView, WalError> {
        let mut view = WalView::default();
        for o in self.storage.list(WAL_PREFIX).await? {
            view.add_key(&o.key, self.seg_size);
        }
        Ok(view)
    }

    /// What the archive holds: the index plus a listing of the keys after
    /// it (two requests plus one per 1,000 new keys), or a full listing when
    /// there is no usable index, which is then written; so is an index
    /// whose tail held `REFRESH_EVERY` new segments or more.
    pub async fn view(&self) -> Result<WalView, WalError> {
        let Some(mut view) = self.read_index().await? else {
            return self.rebuild_index().await;
        };
        let mut added = 0;
        for o in self.storage.list_after(WAL_PREFIX, &view.last_key).await? {
            added += u64::from(view.add_key(&o.key, self.seg_size));
        }
        if added >= REFRESH_EVERY {
            self.store_index(&view).await;
            added = 0;
        }
        self.track(&view, added);
        Ok(view)
    }

    /// List the whole archive and write the index from it (`verify`, and
    /// readers that found the index wrong).
    pub async fn rebuild_index(&self) -> Result<WalView, WalError> {
        let view = self.full_view().await?;
        self.store_index(&view).await;
        self.track(&view, 0);
        Ok(view)
    }

    /// Write the index of exactly `keys` (a full listing less what is about
    /// to be deleted): `expire` and `delete --wal-before` call it before they
    /// delete WAL, so the index never names a segment they removed.
    pub async fn write_index_of<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut view = WalView::default();
        for k in keys {
            view.add_key(k, self.seg_size);
        }
        self.store_index(&view).await;
    }

    /// Delete WAL objects `gone` out of a full `listing` of `wal/`: the
    /// index of what stays is written first, so it never names a removed
    /// segment (`expire`, `delete --wal-before`).
    pub async fn delete_listed(
        &self,
        listing: &[crate::storage::ObjectMeta],
        gone: &[String],
    ) -> Result<(), crate::storage::StorageError> {
        let doomed: std::collections::BTreeSet<&str> = gone.iter().map(String::as_str).collect();
        self.write_index_of(
            listing
                .iter()
                .map(|o| o.key.as_str())
                .filter(|k| !doomed.contains(k)),
        )
        .await;
        self.storage.delete_many(gone).await
    }

    /// Like [`WalArchive::view`], with the gaps it reports confirmed: the first
    /// segment of each of the first 16 gap runs is looked up (one HEAD
    /// each); one that exists means the index missed objects written
    /// behind its last key (a `wal push` catching up), and the index is
    /// rebuilt from a full listing.
    pub async fn checked_view(&self) -> Result<WalView, WalError> {
        let view = self.view().await?;
        let firsts: Vec<(u32, u64)> = view
            .segments
            .iter()
            .flat_map(|(tli, r)| r.gaps().map(move |(a, _)| (*tli, a)))
            .take(GAPS_CONFIRMED)
            .collect();
        for (tli, segno) in firsts {
            let key = self.key(&segment_name(tli, segno, self.seg_size))?;
            if self.exists(&key).await? {
                tracing::info!("the WAL index missed {key}: rebuilding it from a full listing");
                return self.rebuild_index().await;
            }
        }
        Ok(view)
    }

    /// Take a segment or history file just stored (or found already
    /// archived) into the tracked view; every `REFRESH_EVERY` new segments
    /// the index is written. Nothing when this handle has not looked at the
    /// archive (`wal push`: one PUT per segment, nothing more).
    pub(super) async fn note_stored(&self, key: &str) {
        let due = {
            let mut t = self.tracker.lock().expect("index tracker lock");
            let Tracker { view, unwritten } = &mut *t;
            match view {
                Some(v) => {
                    *unwritten += u64::from(v.add_key(key, self.seg_size));
                    (*unwritten >= REFRESH_EVERY).then(|| {
                        *unwritten = 0;
                        v.clone()
                    })
                }
                None => None,
            }
        };
        if let Some(v) = due {
            self.store_index(&v).await;
        }
    }

    /// Write the tracked view if it holds segments the index lacks (`wal
    /// stream` at a clean stop).
    pub async fn flush_index(&self) {
        let due = {
            let mut t = self.tracker.lock().expect("index tracker lock");
            let Tracker { view, unwritten } = &mut *t;
            match view {
                Some(v) if *unwritten > 0 => {
                    *unwritten = 0;
                    Some(v.clone())
                }
                _ => None,
            }
        };
        if let Some(v) = due {
            self.store_index(&v).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    #[test]
    fn ranges_merge_and_answer() {
        let mut r = RangeSet::default();
        for n in [5, 7, 6, 1, 2, 10, 9, 3] {
            assert!(r.insert(n), "{n}");
        }
        assert!(!r.insert(6));
        assert_eq!(r.ranges(), &[(1, 3), (5, 7), (9, 10)]);
        assert_eq!(r.len(), 8);
        assert!(r.contains(1) && r.contains(7) && r.contains(10));
        assert!(!r.contains(0) && !r.contains(4) && !r.contains(8) && !r.contains(11));
        assert_eq!(r.gaps().collect::<Vec<_>>(), vec![(4, 4), (8, 8)]);
        assert!(r.insert(4) && r.insert(8));
        assert_eq!(r.ranges(), &[(1, 10)]);
        assert_eq!((r.first(), r.last()), (Some(1), Some(10)));
        assert_eq!(r.to_set().len(), 10);
    }

    #[test]
    fn a_view_round_trips_through_the_index_compactly() {
        let mut v = WalView::default();
        for n in (1..=10_000u64).filter(|n| *n != 500) {
            v.add_key(&format!("wal/00000001/{}", segment_name(1, n, SEG)), SEG);
        }
        v.add_key("wal/00000002.history", SEG);
        v.add_key(&format!("wal/00000002/{}", segment_name(2, 3, SEG)), SEG);
        v.add_key(
            &format!("wal/00000002/{}.00000028.backup", segment_name(2, 3, SEG)),
            SEG,
        );
        assert!(!v.add_key(INDEX_KEY, SEG));
        let bytes = v.to_index(SEG).to_bytes();
        // Two ranges and a history: tiny, whatever the archive's length.
        assert!(bytes.len() < 400, "{}", String::from_utf8_lossy(&bytes));
        let back = WalIndex::parse(&bytes, SEG).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.segments[&1].len(), 9_999);
        assert_eq!(back.histories, BTreeSet::from([2]));
        // The last key is the last complete segment's, never a `.backup`
        // or partial that sorts after it.
        assert_eq!(
            back.last_key,
            format!("wal/00000002/{}", segment_name(2, 3, SEG))
        );
        let mut v = back.clone();
        v.add_key(
            &format!("wal/00000002/{}.00002000.partial", segment_name(2, 4, SEG)),
            SEG,
        );
        assert_eq!(v.last_key, back.last_key);
    }

    #[test]
    fn unusable_indexes_are_refused() {
        let ok = WalView::default().to_index(SEG);
        assert!(WalIndex::parse(&ok.to_bytes(), SEG).is_ok());
        assert!(WalIndex::parse(&ok.to_bytes(), 1 << 20).is_err());
        assert!(WalIndex::parse(b"{", SEG).is_err());
        let mut bad = ok.clone();
        bad.format = 2;
        assert!(WalIndex::parse(&bad.to_bytes(), SEG).is_err());
        let mut bad = ok.clone();
        bad.timelines.insert(
            "00000001".into(),
            TimelineIndex {
                history: false,
                segments: vec![[5, 9], [7, 12]],
            },
        );
        assert!(WalIndex::parse(&bad.to_bytes(), SEG).is_err());
        let mut bad = ok.clone();
        bad.timelines.insert(
            "1".into(),
            TimelineIndex {
                history: true,
                segments: vec![],
            },
        );
        assert!(WalIndex::parse(&bad.to_bytes(), SEG).is_err());
        let mut bad = ok;
        bad.last_key = "backups/x".into();
        assert!(WalIndex::parse(&bad.to_bytes(), SEG).is_err());
    }
}
