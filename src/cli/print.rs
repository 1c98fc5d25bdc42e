//! Human-readable output of `list` and `info` (the `--json` shapes are in
//! `output.rs`).

use crate::jobs;
use crate::units::human_bytes;

pub(super) fn backup_info(m: &crate::repo::manifest::BackupManifest) {
    println!("backup      {}", m.id);
    if let Some(n) = &m.name {
        println!("name        {n}");
    }
    println!(
        "system      {} (PostgreSQL {})",
        m.system_identifier, m.server_version
    );
    println!("label       {}", m.label);
    println!("started     {}", m.started_at.to_rfc3339());
    println!(
        "finished    {} ({:.1} s)",
        m.finished_at.to_rfc3339(),
        m.stats.seconds
    );
    println!("timeline    {} (ends on {})", m.timeline, m.end_timeline);
    println!("lsn         {} to {}", m.start_lsn, m.end_lsn);
    println!("wal needed  {} .. {}", m.wal_start, m.wal_end);
    println!(
        "storage     {} packs, {} stored, {} of data, {}",
        m.packs.len(),
        human_bytes(m.stats.stored_bytes),
        human_bytes(m.stats.raw_bytes),
        m.compression
    );
    println!("files       {}", m.stats.tables);
    for t in &m.tablespaces {
        println!("tablespace  {} at {}", t.oid, t.location);
    }
}

pub(super) fn listing(l: &jobs::inspect::Listing) {
    if l.dumps.is_empty() {
        println!("no dumps in {}", l.repository);
    } else {
        println!(
            "{:<20} {:<16} {:<10} {:>7} {:>12} {:>10} {:>10}  NAME",
            "ID", "DATABASE", "SERVER", "TABLES", "ROWS", "DATA", "STORED"
        );
        for d in &l.dumps {
            let mut name = d.name.clone().unwrap_or_default();
            if d.schema_only {
                name.push_str(" (schema only)");
            }
            if d.data_only {
                name.push_str(" (data only)");
            }
            println!(
                "{:<20} {:<16} {:<10} {:>7} {:>12} {:>10} {:>10}  {}",
                d.id,
                d.database,
                d.server_version.split_whitespace().next().unwrap_or(""),
                d.tables,
                d.rows,
                human_bytes(d.bytes_raw),
                human_bytes(d.bytes_stored),
                name.trim()
            );
        }
    }
    if !l.backups.is_empty() {
        println!();
        println!(
            "{:<20} {:<8} {:>4} {:>14} {:>14} {:>10} {:>10}  NAME",
            "BACKUP", "SERVER", "TLI", "START LSN", "END LSN", "DATA", "STORED"
        );
        for b in &l.backups {
            println!(
                "{:<20} {:<8} {:>4} {:>14} {:>14} {:>10} {:>10}  {}",
                b.id,
                b.server_version,
                b.timeline,
                b.start_lsn.to_string(),
                b.end_lsn.to_string(),
                human_bytes(b.bytes_raw),
                human_bytes(b.bytes_stored),
                b.name.clone().unwrap_or_default()
            );
        }
    }
    super::drill::print_proven(l);
    for w in &l.wal {
        println!(
            "wal timeline {}: {} segments, {} .. {}{}",
            w.timeline,
            w.segments,
            w.first,
            w.last,
            if w.gaps.is_empty() {
                String::new()
            } else {
                format!(", {} missing (first {})", w.gaps.len(), w.gaps[0])
            }
        );
    }
    for i in &l.deleting {
        println!(
            "being deleted: {} ({} objects, {} left): an interrupted deletion, never restorable (the next pgtide expire or delete finishes it)",
            i.id,
            i.objects,
            human_bytes(i.bytes)
        );
    }
    for i in &l.incomplete {
        println!(
            "incomplete: {} ({} objects, {}) has no manifest: running now, or failed (pgtide delete {} removes it)",
            i.id,
            i.objects,
            human_bytes(i.bytes),
            i.id
        );
    }
    if let Some(lock) = &l.object_lock {
        println!(
            "object lock: every object kept is retained in {} mode for {} after it is written",
            lock.mode.as_str(),
            crate::units::format_duration(std::time::Duration::from_secs(lock.seconds))
        );
    }
}

pub(super) fn dump_info(m: &crate::repo::manifest::DumpManifest) {
    println!("dump        {}", m.id);
    if let Some(n) = &m.name {
        println!("name        {n}");
    }
    if let Some(d) = &m.description {
        println!("description {d}");
    }
    println!(
        "source      {} on PostgreSQL {} ({})",
        m.source.database, m.source.server_version, m.source.connection
    );
    println!(
        "encoding    {} (collate {}, ctype {})",
        m.source.encoding, m.source.collate, m.source.ctype
    );
    println!("started     {}", m.started_at.to_rfc3339());
    println!(
        "finished    {} ({:.1} s)",
        m.finished_at.to_rfc3339(),
        m.stats.seconds
    );
    println!("snapshot    {}", m.source.snapshot);
    println!(
        "storage     {} packs, {} stored, {} of data, {}, chunks of {}",
        m.packs.len(),
        human_bytes(m.stats.stored_bytes),
        human_bytes(m.stats.raw_bytes),
        m.compression,
        human_bytes(m.options.chunk_size)
    );
    if let Some(s) = &m.schema {
        println!(
            "schema      {} ({} chunks, {})",
            s.pg_dump_version,
            s.stream.chunks.len(),
            human_bytes(s.stream.raw_bytes)
        );
    }
    println!(
        "contents    {} tables, {} rows, {} sequences, {} large objects, {} materialized views to refresh",
        m.tables.len(),
        m.stats.rows,
        m.sequences.len(),
        m.large_objects.items.len(),
        m.matviews.len()
    );
    if !m.tables.is_empty() {
        println!();
        println!(
            "{:<40} {:>12} {:>10} {:>10} {:>6} {:>7}",
            "TABLE", "ROWS", "DATA", "STORED", "PARTS", "CHUNKS"
        );
        for t in &m.tables {
            println!(
                "{:<40} {:>12} {:>10} {:>10} {:>6} {:>7}",
                t.qualified(),
                t.rows(),
                human_bytes(t.raw_bytes()),
                human_bytes(t.stored_bytes()),
                t.parts.len(),
                t.parts.iter().map(|p| p.stream.chunks.len()).sum::<usize>()
            );
        }
    }
}

/// `pgtide copy`: one line per set, one for the WAL, a total.
pub(super) fn copy_report(r: &jobs::copy::CopyReport) {
    for s in &r.sets {
        if s.status == "present" {
            println!("{} {} is already in {}", s.kind, s.id, r.to);
        } else {
            println!(
                "copied {} {}: {} objects, {} ({} objects already there)",
                s.kind,
                s.id,
                s.objects_copied,
                human_bytes(s.bytes_copied),
                s.objects_present
            );
        }
    }
    if r.wal.objects_copied + r.wal.objects_present > 0 {
        println!(
            "copied {} WAL objects, {} ({} already there)",
            r.wal.objects_copied,
            human_bytes(r.wal.bytes_copied),
            r.wal.objects_present
        );
    }
    println!(
        "{} → {}: {} copied in {:.1} s",
        r.from,
        r.to,
        human_bytes(r.bytes_copied),
        r.seconds
    );
}
