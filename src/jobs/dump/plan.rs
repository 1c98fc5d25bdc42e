//! Pure planning of a dump's data phase: which unit of work copies which
//! table (or ctid block range of a table), largest first, so the biggest
//! tables start early and the workers finish together.

use crate::repo::manifest::CtidRange;

/// One unit of work: a whole table or one block range of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    /// Index into the dump's table list.
    pub table: usize,
    /// Index of this part within the table's parts.
    pub part: usize,
    pub ctid: Option<CtidRange>,
    /// Cut the table's one COPY stream into parts of about this many bytes,
    /// at row boundaries (parts numbered from `part`).
    pub split_output: Option<u64>,
    /// Bytes of the relation this unit covers (for ordering and progress).
    pub est_bytes: u64,
}

/// How tables bigger than the split size are divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBy {
    /// One sequential scan per table (with PostgreSQL's small ring buffer,
    /// so the source's cache is spared); its output is cut into parts that
    /// restore loads in parallel.
    Output,
    /// Block ranges read by several workers at once (a TID range scan on
    /// 14+); faster to read on many cores, but it goes through
    /// shared_buffers and evicts the source's working set.
    Ctid,
}

/// What the planner needs to know of a table.
#[derive(Debug, Clone, Copy)]
pub struct TableSize {
    pub bytes: u64,
    /// False for tables that must be read whole (extension config filters).
    pub splittable: bool,
}

/// Split tables bigger than `split_size` into block ranges of about
/// `split_size` each (only where the server scans TID ranges efficiently).
/// Returns the items largest first and, per table, its number of items.
pub fn plan(
    tables: &[TableSize],
    block_size: u64,
    split_size: u64,
    split_by: SplitBy,
    tid_range_scan: bool,
) -> (Vec<WorkItem>, Vec<usize>) {
    let mut items = Vec::new();
    let mut parts_per_table = Vec::with_capacity(tables.len());
    for (i, t) in tables.iter().enumerate() {
        let blocks = t.bytes / block_size.max(1);
        let big = split_size > 0 && t.bytes > split_size;
        let split = split_by == SplitBy::Ctid && tid_range_scan && t.splittable && big;
        if !split {
            items.push(WorkItem {
                table: i,
                part: 0,
                ctid: None,
                split_output: (split_by == SplitBy::Output && big).then_some(split_size),
                est_bytes: t.bytes,
            });
            parts_per_table.push(1);
            continue;
        }
        let parts = t.bytes.div_ceil(split_size);
        let per = blocks.div_ceil(parts).max(1);
        let mut start = 0u64;
        let mut part = 0;
        while start < blocks {
            let end = start + per;
            // The last range is open-ended: rows in blocks added after the
            // size was measured are invisible to the snapshot anyway, but an
            // open end can never miss one.
            let last = end >= blocks;
            items.push(WorkItem {
                table: i,
                part,
                ctid: Some(CtidRange {
                    start: start as u32,
                    end: if last { None } else { Some(end as u32) },
                }),
                split_output: None,
                est_bytes: (end.min(blocks) - start) * block_size,
            });
            part += 1;
            start = end;
        }
        parts_per_table.push(part);
    }
    items.sort_by(|a, b| {
        b.est_bytes
            .cmp(&a.est_bytes)
            .then(a.table.cmp(&b.table))
            .then(a.part.cmp(&b.part))
    });
    (items, parts_per_table)
}

/// The WHERE clause of a block range.
pub fn ctid_predicate(r: &CtidRange) -> String {
    match r.end {
        Some(end) => format!(
            "ctid >= '({},0)'::tid AND ctid < '({},0)'::tid",
            r.start, end
        ),
        None => format!("ctid >= '({},0)'::tid", r.start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_stay_whole_and_order_is_largest_first() {
        let t = [
            TableSize {
                bytes: 10,
                splittable: true,
            },
            TableSize {
                bytes: 1000,
                splittable: true,
            },
        ];
        let (items, parts) = plan(&t, 8192, 1 << 30, SplitBy::Ctid, true);
        assert_eq!(parts, vec![1, 1]);
        assert_eq!(items[0].table, 1);
        assert_eq!(items[1].table, 0);
    }

    #[test]
    fn big_tables_split_into_contiguous_ranges_covering_everything() {
        let bs = 8192;
        let t = [TableSize {
            bytes: 1000 * bs,
            splittable: true,
        }];
        let (items, parts) = plan(&t, bs, 300 * bs, SplitBy::Ctid, true);
        assert_eq!(parts, vec![4]);
        let mut ranges: Vec<_> = items.iter().map(|i| i.ctid.unwrap()).collect();
        ranges.sort_by_key(|r| r.start);
        assert_eq!(ranges[0].start, 0);
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, Some(w[1].start));
        }
        assert_eq!(ranges.last().unwrap().end, None);
        // No split without TID range scans, nor for unsplittable tables.
        assert_eq!(plan(&t, bs, 300 * bs, SplitBy::Ctid, false).1, vec![1]);
        let t2 = [TableSize {
            bytes: 1000 * bs,
            splittable: false,
        }];
        assert_eq!(plan(&t2, bs, 300 * bs, SplitBy::Ctid, true).1, vec![1]);
    }

    #[test]
    fn output_splitting_keeps_one_scan_per_table() {
        let bs = 8192;
        let t = [
            TableSize {
                bytes: 1000 * bs,
                splittable: true,
            },
            TableSize {
                bytes: 10 * bs,
                splittable: true,
            },
        ];
        let (items, per_table) = plan(&t, bs, 300 * bs, SplitBy::Output, true);
        assert_eq!(per_table, vec![1, 1]);
        assert_eq!(items[0].split_output, Some(300 * bs));
        assert_eq!(items[0].ctid, None);
        assert_eq!(items[1].split_output, None);
    }

    #[test]
    fn predicates() {
        assert_eq!(
            ctid_predicate(&CtidRange {
                start: 5,
                end: Some(9)
            }),
            "ctid >= '(5,0)'::tid AND ctid < '(9,0)'::tid"
        );
        assert_eq!(
            ctid_predicate(&CtidRange {
                start: 5,
                end: None
            }),
            "ctid >= '(5,0)'::tid"
        );
    }
}
