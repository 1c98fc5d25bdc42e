//! Where a `wal stream` connection starts: pure rules over what the
//! archive holds, the slot's restart point and the server's timeline
//! history.
//!
//! Owns: the choice of (timeline, segment-aligned LSN) for
//! `START_REPLICATION`, and the point to fall back to when the server no
//! longer has the WAL of the first choice. Must never: talk to the server
//! or the store (callers hand over what they read).
//!
//! The rules, in order:
//! 1. The archive's newest timeline that the server's history knows, and the
//!    end of its newest complete segment `P`: if that timeline goes on past
//!    `P` on the server, continue there; if the server left it at a switch
//!    point at or before `P` (a failover to a standby that had not received
//!    all the archive holds: that tail is an abandoned branch), continue on
//!    the timeline that follows it, from the segment holding the switch
//!    point. Never beyond the server's own position.
//! 2. No archive position: the slot's restart point, on its timeline.
//! 3. Neither: the segment the server is writing.
//!
//! A start before the slot's restart point is tried (the server may still
//! have that WAL, e.g. through `wal_keep_size`), with the slot's restart
//! point as the fallback (or, when the slot's is unknown, the segment the
//! server is writing): archiving the WAL the server still has beats
//! refusing to archive anything, and the gap is reported.

use crate::pg::lsn::Lsn;

/// A position to stream from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPoint {
    pub tli: u32,
    /// Always a segment boundary.
    pub lsn: Lsn,
}

/// The decision: where to start, and where to go if the server has already
/// removed the WAL at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPlan {
    pub start: StartPoint,
    pub fallback: Option<StartPoint>,
}

/// The server's timelines: each ancestor with the LSN where it ended, and the
/// current one (no end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTimelines {
    /// `(tli, switch_lsn)` of each ancestor, oldest first (its history file).
    pub ancestors: Vec<(u32, Lsn)>,
    pub current: u32,
}

impl ServerTimelines {
    /// Where the server left timeline `tli`: `Some(None)` for the current
    /// timeline, `Some(Some(lsn))` for an ancestor, `None` if `tli` is not
    /// in the server's history.
    fn end_of(&self, tli: u32) -> Option<Option<Lsn>> {
        if tli == self.current {
            return Some(None);
        }
        self.ancestors
            .iter()
            .find(|(t, _)| *t == tli)
            .map(|(_, end)| Some(*end))
    }

    /// True when `tli` is the server's timeline or one of its ancestors.
    pub fn knows(&self, tli: u32) -> bool {
        self.end_of(tli).is_some()
    }

    /// The timeline that holds position `lsn` in the server's history.
    pub fn timeline_at(&self, lsn: Lsn) -> u32 {
        self.ancestors
            .iter()
            .find(|(_, end)| lsn < *end)
            .map(|(t, _)| *t)
            .unwrap_or(self.current)
    }
}

/// See the module documentation.
///
/// - `archived`: for each timeline the archive holds complete segments of,
///   the end of its newest one.
/// - `slot`: the slot's restart point (and its timeline when the server
///   said), if known.
/// - `server_end`: the server's current WAL position (`IDENTIFY_SYSTEM`).
pub fn plan(
    seg_size: u64,
    timelines: &ServerTimelines,
    server_end: Lsn,
    archived: &[(u32, Lsn)],
    slot: Option<(Lsn, Option<u32>)>,
) -> StartPlan {
    let at = |lsn: Lsn, tli: Option<u32>| {
        let lsn = lsn.segment_start(seg_size);
        StartPoint {
            tli: tli.unwrap_or_else(|| timelines.timeline_at(lsn)),
            lsn,
        }
    };
    let server_seg = server_end.segment_start(seg_size);
    let from_slot = slot.map(|(lsn, tli)| at(lsn.min(server_end), tli));
    let from_archive = archived
        .iter()
        .copied()
        .filter(|(tli, _)| timelines.knows(*tli))
        .max_by_key(|(tli, _)| *tli)
        .map(|(tli, next)| match timelines.end_of(tli).flatten() {
            Some(end) if next >= end => {
                // Past the switch point: the rest is on the next timeline.
                let end = end.min(server_end);
                StartPoint {
                    tli: timelines.timeline_at(end),
                    lsn: end.segment_start(seg_size),
                }
            }
            _ => StartPoint {
                tli,
                lsn: next.min(server_seg),
            },
        });
    let from_server = at(server_end, Some(timelines.current));
    let start = from_archive.or(from_slot).unwrap_or(from_server);
    // Where to go if the server has removed the WAL at `start`: the slot's
    // restart point, or (slot unknown) the segment the server is writing.
    let fallback = [from_slot, Some(from_server)]
        .into_iter()
        .flatten()
        .find(|p| p.lsn > start.lsn);
    StartPlan { start, fallback }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn seg(n: u64) -> Lsn {
        Lsn(n * SEG)
    }

    fn off(n: u64, offset: u64) -> Lsn {
        Lsn(n * SEG + offset)
    }

    fn tl1() -> ServerTimelines {
        ServerTimelines {
            ancestors: vec![],
            current: 1,
        }
    }

    #[test]
    fn continues_the_archive_on_the_same_timeline() {
        let p = plan(SEG, &tl1(), off(9, 100), &[(1, seg(5))], None);
        assert_eq!(
            p.start,
            StartPoint {
                tli: 1,
                lsn: seg(5)
            }
        );
        // Slot unknown: the server's own segment, if the WAL is gone.
        assert_eq!(
            p.fallback,
            Some(StartPoint {
                tli: 1,
                lsn: seg(9)
            })
        );
        // Never beyond the server's own segment.
        let p = plan(SEG, &tl1(), off(3, 100), &[(1, seg(5))], None);
        assert_eq!(p.start.lsn, seg(3));
    }

    #[test]
    fn slot_ahead_of_the_archive_is_the_fallback() {
        let p = plan(
            SEG,
            &tl1(),
            Lsn(seg(20).0 + 5),
            &[(1, seg(5))],
            Some((off(12, 77), Some(1))),
        );
        assert_eq!(
            p.start,
            StartPoint {
                tli: 1,
                lsn: seg(5)
            }
        );
        assert_eq!(
            p.fallback,
            Some(StartPoint {
                tli: 1,
                lsn: seg(12)
            })
        );
        // The archive ahead of the slot: the server's segment is the fallback.
        let p = plan(SEG, &tl1(), seg(20), &[(1, seg(15))], Some((seg(12), None)));
        assert_eq!(p.start.lsn, seg(15));
        assert_eq!(
            p.fallback,
            Some(StartPoint {
                tli: 1,
                lsn: seg(20)
            })
        );
        // Nothing later to go to.
        let p = plan(
            SEG,
            &tl1(),
            off(15, 9),
            &[(1, seg(15))],
            Some((seg(12), None)),
        );
        assert_eq!(p.fallback, None);
    }

    #[test]
    fn empty_archive_starts_at_the_slot_or_the_server() {
        let p = plan(SEG, &tl1(), seg(20), &[], Some((off(4, 1), None)));
        assert_eq!(
            p.start,
            StartPoint {
                tli: 1,
                lsn: seg(4)
            }
        );
        let p = plan(SEG, &tl1(), off(20, 3), &[], None);
        assert_eq!(
            p.start,
            StartPoint {
                tli: 1,
                lsn: seg(20)
            }
        );
    }

    fn promoted_at(lsn: Lsn) -> ServerTimelines {
        ServerTimelines {
            ancestors: vec![(1, lsn)],
            current: 2,
        }
    }

    #[test]
    fn archive_behind_the_fork_continues_on_the_old_timeline() {
        // The server streams timeline 1 up to the fork, then says so.
        let p = plan(SEG, &promoted_at(off(8, 40)), seg(12), &[(1, seg(6))], None);
        assert_eq!(
            p.start,
            StartPoint {
                tli: 1,
                lsn: seg(6)
            }
        );
    }

    #[test]
    fn archive_past_the_fork_continues_on_the_new_timeline_at_the_fork() {
        // Failover to a lagging standby: the archive holds timeline 1 up to
        // segment 10, the new primary left timeline 1 inside segment 8.
        let tls = promoted_at(off(8, 40));
        let p = plan(
            SEG,
            &tls,
            seg(14),
            &[(1, seg(10))],
            Some((seg(13), Some(2))),
        );
        assert_eq!(
            p.start,
            StartPoint {
                tli: 2,
                lsn: seg(8)
            }
        );
        assert_eq!(
            p.fallback,
            Some(StartPoint {
                tli: 2,
                lsn: seg(13)
            })
        );
        // Exactly at the fork.
        let p = plan(SEG, &tls, seg(14), &[(1, off(8, 40))], None);
        assert_eq!(
            p.start,
            StartPoint {
                tli: 2,
                lsn: seg(8)
            }
        );
    }

    #[test]
    fn archive_two_timelines_back() {
        let tls = ServerTimelines {
            ancestors: vec![(1, off(5, 8)), (2, off(9, 8))],
            current: 3,
        };
        // Past timeline 1's end: timeline 2 holds the fork point.
        let p = plan(SEG, &tls, seg(30), &[(1, seg(7))], None);
        assert_eq!(
            p.start,
            StartPoint {
                tli: 2,
                lsn: seg(5)
            }
        );
        // A slot with no timeline: the history says which one holds it.
        let p = plan(SEG, &tls, seg(30), &[], Some((off(9, 100), None)));
        assert_eq!(
            p.start,
            StartPoint {
                tli: 2,
                lsn: seg(9)
            }
        );
        let p = plan(SEG, &tls, seg(30), &[], Some((seg(10), None)));
        assert_eq!(
            p.start,
            StartPoint {
                tli: 3,
                lsn: seg(10)
            }
        );
    }

    #[test]
    fn archive_of_an_unknown_timeline_is_ignored() {
        // The archive's newest timeline is not in this server's history.
        let p = plan(SEG, &tl1(), seg(7), &[(3, seg(20))], None);
        assert_eq!(
            p.start,
            StartPoint {
                tli: 1,
                lsn: seg(7)
            }
        );
        let p = plan(SEG, &tl1(), seg(7), &[(1, seg(4)), (3, seg(20))], None);
        assert_eq!(
            p.start,
            StartPoint {
                tli: 1,
                lsn: seg(4)
            }
        );
    }
}
