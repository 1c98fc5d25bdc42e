//! The benchmark's report: the figures of every step, summarised (median
//! and spread of wall time, ratios to peers, the resource that bound it),
//! and rendered as a terminal table or the Markdown of docs/BENCHMARKS.md.
//! The JSON fields are documented in `src/cli/output.rs` (`bench`).
//!
//! Owns: arithmetic over measured figures and their text forms (pure).
//! Must never: measure or run anything.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::machine::Machine;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub pgtide_version: String,
    /// `release`, or `debug` (figures of a debug build are not pgtide's).
    pub pgtide_build: String,
    /// The command that reproduces this run.
    pub command: String,
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    pub machine: Machine,
    pub server: ServerInfo,
    /// The peers found, with their versions.
    pub tools: Vec<Tool>,
    pub database: DatabaseInfo,
    pub settings: SettingsInfo,
    pub steps: Vec<StepReport>,
    pub skipped: Vec<Skipped>,
    /// Issue 13's speed and memory targets, checked against these figures.
    pub targets: Vec<TargetCheck>,
}

/// One target and how this run measured against it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// The targets (issue 13) whose figures this run has: wall-time ratios of
/// pgtide's steps to their peers at `--jobs`, and peak RSS.
pub fn check_targets(steps: &[StepReport], jobs: usize) -> Vec<TargetCheck> {
    let ratio = |step: &str, peer: &str| {
        steps
            .iter()
            .find(|s| s.name == step)?
            .ratios
            .iter()
            .find(|r| r.peer == peer)
            .map(|r| r.ratio)
    };
    let wall = |name: &str| {
        steps
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.wall_seconds.median)
    };
    let pairs = [
        (
            format!("pgtide dump -j{jobs}"),
            format!("pg_dump -Fd -j{jobs}"),
            0.45,
        ),
        (
            format!("pgtide restore -j{jobs}"),
            format!("pg_restore -j{jobs}"),
            0.75,
        ),
        (
            "pgtide backup zstd:1".to_owned(),
            "pg_basebackup -Ft client-zstd:1".to_owned(),
            1.0,
        ),
        (
            "pgtide backup zstd:3".to_owned(),
            "pg_basebackup -Ft client-zstd:3".to_owned(),
            0.75,
        ),
    ];
    let mut out: Vec<TargetCheck> = pairs
        .iter()
        .filter_map(|(step, peer, limit)| {
            let r = ratio(step, peer)?;
            Some(TargetCheck {
                target: format!("{step} ≤ {limit:.2} × {peer} (wall time)"),
                measured: format!(
                    "{r:.2} × ({:.2} s against {:.2} s)",
                    wall(step)?,
                    wall(peer)?
                ),
                met: r <= *limit,
            })
        })
        .collect();
    let rss = steps
        .iter()
        .filter(|s| s.tool == "pgtide")
        .max_by_key(|s| s.peak_rss_bytes);
    if let Some(s) = rss {
        out.push(TargetCheck {
            target: "peak RSS ≤ 256 MiB, every pgtide step".to_owned(),
            measured: format!("largest {} MiB ({})", mib(s.peak_rss_bytes), s.name),
            met: s.peak_rss_bytes <= 256 << 20,
        });
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: String,
    pub path: String,
    /// The first line of its `--version` (pgBackRest: `version`).
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub version: String,
    /// The server runs on this machine and its data directory is readable.
    pub local: bool,
    pub data_directory: Option<String>,
    /// Why server CPU is `null` in the steps (a remote server, an
    /// unreadable data directory), or null when it was measured.
    pub cpu_unavailable: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseInfo {
    pub name: String,
    /// `--generate` SCALE, or null for a database measured as it is.
    pub generated_scale: Option<u32>,
    pub size_bytes: u64,
    /// Every database of the cluster (what a physical backup reads).
    pub cluster_size_bytes: u64,
    pub tables: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsInfo {
    pub jobs: usize,
    /// Worker counts at which dumps and backups were measured too.
    pub scale_jobs: Vec<usize>,
    pub runs: usize,
    /// One unrecorded run of every step before the measured ones.
    pub warmup: bool,
    pub only: Vec<String>,
    pub wal_burst_bytes: u64,
    /// Steps start with an empty page cache (needs root); otherwise they
    /// read what earlier steps left in it.
    pub page_cache_dropped: bool,
    pub repository: String,
}

/// One measured repetition of a step.
#[derive(Debug, Clone, Serialize)]
pub struct RunCost {
    pub wall_seconds: f64,
    pub client_cpu_seconds: f64,
    pub server_cpu_seconds: Option<f64>,
    /// CPU the rest of the machine used meanwhile (neither the tool nor the
    /// server): other users of a shared machine.
    pub other_cpu_seconds: Option<f64>,
    pub peak_rss_bytes: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The peer step's name.
    pub peer: String,
    /// This step's median wall time over the peer's (below 1: faster).
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Unique, e.g. `pgtide dump` or `pg_dump -Fd -j2`.
    pub name: String,
    /// dump, restore, backup, physical-restore or wal.
    pub kind: String,
    /// pgtide, pg_dump, pg_restore, pg_basebackup, pgbackrest, tar, pg_receivewal.
    pub tool: String,
    /// The step whatever its worker count, e.g. `pgtide dump`: the steps
    /// of one family differ only in `jobs`.
    pub family: String,
    /// The worker count it ran with; null for a tool without one.
    pub jobs: Option<usize>,
    /// The command as run (passwords never appear).
    pub command: String,
    pub runs: Vec<RunCost>,
    pub wall_seconds: Spread,
    pub client_cpu_seconds: f64,
    pub server_cpu_seconds: Option<f64>,
    pub other_cpu_seconds: Option<f64>,
    pub peak_rss_bytes: u64,
    pub bytes_read: Option<u64>,
    pub bytes_stored: Option<u64>,
    pub mb_per_second: Option<f64>,
    /// The job's own `requests` count (pgtide's `--json`), null when the
    /// tool does not report one.
    pub requests: Option<serde_json::Value>,
    pub ratios: Vec<Ratio>,
    pub bound_by: Option<String>,
    /// Logical restores: the restored database holds exactly the source's
    /// rows (count and hash of every row, per table). Null for other steps.
    pub matches_source: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub step: String,
    pub reason: String,
}

/// Which resource bound a step, from its medians: the CPU when tool and
/// server together kept at least 80% of the cores busy (the larger of the
/// two named); else one side that kept one core at least 90% busy (a
/// single-threaded tool, or one worker, at its limit); else "I/O or
/// waiting". Unknown without the server's CPU unless the tool alone kept
/// the cores that busy.
pub fn bound_by(
    wall: f64,
    client_cpu: f64,
    server_cpu: Option<f64>,
    cores: usize,
) -> Option<String> {
    if wall <= 0.0 || cores == 0 {
        return None;
    }
    let capacity = 0.8 * wall * cores as f64;
    let one_core = 0.9 * wall;
    let verdict = match server_cpu {
        None if client_cpu >= capacity => "client CPU",
        None => return None,
        Some(s) if client_cpu + s >= capacity && client_cpu >= s => "client CPU",
        Some(s) if client_cpu + s >= capacity => "server CPU",
        Some(s) if client_cpu >= one_core && client_cpu >= s => "client CPU (one core)",
        Some(s) if s >= one_core => "server CPU (one core)",
        Some(_) => "I/O or waiting",
    };
    Some(verdict.to_owned())
}

/// Summarises the runs of one step (ratios are filled in afterwards by
/// [`fill_ratios`]).
#[allow(clippy::too_many_arguments)]
pub fn summarise(
    name: &str,
    kind: &str,
    tool: &str,
    command: &str,
    runs: Vec<RunCost>,
    bytes_read: Option<u64>,
    bytes_stored: Option<u64>,
    requests: Option<serde_json::Value>,
    cores: usize,
) -> Option<StepReport> {
    let wall = Spread::of(&runs.iter().map(|r| r.wall_seconds).collect::<Vec<_>>())?;
    let median = |f: &dyn Fn(&RunCost) -> Option<f64>| {
        let v: Option<Vec<f64>> = runs.iter().map(f).collect();
        v.and_then(|v| Spread::of(&v)).map(|s| s.median)
    };
    let client = median(&|r| Some(r.client_cpu_seconds)).unwrap_or(0.0);
    let server = median(&|r| r.server_cpu_seconds);
    let other = median(&|r| r.other_cpu_seconds);
    Some(StepReport {
        name: name.to_owned(),
        kind: kind.to_owned(),
        tool: tool.to_owned(),
        command: command.to_owned(),
        wall_seconds: wall,
        client_cpu_seconds: client,
        server_cpu_seconds: server,
        other_cpu_seconds: other,
        peak_rss_bytes: runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
        mb_per_second: bytes_read
            .filter(|_| wall.median > 0.0)
            .map(|b| b as f64 / 1e6 / wall.median),
        bytes_read,
        bytes_stored,
        requests,
        ratios: Vec::new(),
        bound_by: bound_by(wall.median, client, server, cores),
        matches_source: None,
        family: name.to_owned(),
        jobs: None,
        runs,
    })
}

/// Sets each step's ratios to the peers `peers_of` names for it, among the
/// steps that were measured.
pub fn fill_ratios(steps: &mut [StepReport], peers_of: impl Fn(&str) -> Vec<String>) {
    let walls: Vec<(String, f64)> = steps
        .iter()
        .map(|s| (s.name.clone(), s.wall_seconds.median))
        .collect();
    for s in steps.iter_mut() {
        s.ratios = peers_of(&s.name)
            .into_iter()
            .filter_map(|peer| {
                let (_, w) = walls.iter().find(|(n, _)| *n == peer)?;
                (*w > 0.0).then(|| Ratio {
                    ratio: s.wall_seconds.median / w,
                    peer,
                })
            })
            .collect();
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}

/// `put 3, get 0, …` of a `requests` object.
/// `put 3 (1 per 10.0 MiB), get 0, …` of a step's `requests` object:
/// the kinds used (`0` when none was), PUTs with the stored bytes per PUT.
fn requests_text(s: &StepReport) -> String {
    let Some(o) = s.requests.as_ref().and_then(|v| v.as_object()) else {
        return "–".to_owned();
    };
    const ORDER: [&str; 5] = ["put", "get", "list", "head", "delete"];
    let mut kinds: Vec<(&String, &serde_json::Value)> = o.iter().collect();
    kinds.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    let used: Vec<String> = kinds
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_u64().filter(|n| *n > 0)?)))
        .map(|(k, n)| match (k.as_str(), s.bytes_stored) {
            ("put", Some(b)) if b > 0 => format!("put {n} (1 per {} MiB)", mib(b / n)),
            _ => format!("{k} {n}"),
        })
        .collect();
    if used.is_empty() {
        "0".to_owned()
    } else {
        used.join(", ")
    }
}

fn ratio_text(s: &StepReport) -> String {
    if s.ratios.is_empty() {
        return "–".to_owned();
    }
    s.ratios
        .iter()
        .map(|r| format!("{:.2}", r.ratio))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Which peers the ratio column compares each step with.
fn ratio_legend(r: &BenchReport) -> Vec<String> {
    r.steps
        .iter()
        .filter(|s| !s.ratios.is_empty())
        .map(|s| {
            let peers: Vec<&str> = s.ratios.iter().map(|r| r.peer.as_str()).collect();
            format!("ratio of {} to {}", s.name, peers.join(" / "))
        })
        .collect()
}

/// The columns of both renderings.
fn rows(r: &BenchReport) -> Vec<[String; 12]> {
    r.steps
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                format!("{:.2}", s.wall_seconds.median),
                format!("{:.2}–{:.2}", s.wall_seconds.min, s.wall_seconds.max),
                format!("{:.1}", s.client_cpu_seconds),
                opt(s.server_cpu_seconds, |v| format!("{v:.1}")),
                mib(s.peak_rss_bytes),
                opt(s.bytes_read, mib),
                opt(s.bytes_stored, mib),
                opt(s.mb_per_second, |v| format!("{v:.0}")),
                requests_text(s),
                ratio_text(s),
                s.bound_by.clone().unwrap_or_else(|| "–".to_owned()),
            ]
        })
        .collect()
}

const HEADERS: [&str; 12] = [
    "step",
    "wall s",
    "spread s",
    "client CPU s",
    "server CPU s",
    "peak RSS MiB",
    "read MiB",
    "stored MiB",
    "MB/s",
    "requests",
    "ratio",
    "bound by",
];

/// The families measured at several worker counts, fewest workers first:
/// step, workers, wall, speed-up, client and server CPU.
fn scaling_rows(r: &BenchReport) -> Vec<[String; 6]> {
    let mut out = Vec::new();
    let mut families: Vec<&str> = Vec::new();
    for s in &r.steps {
        if !families.contains(&s.family.as_str()) {
            families.push(&s.family);
        }
    }
    for f in families {
        let mut members: Vec<&StepReport> = r
            .steps
            .iter()
            .filter(|s| s.family == f && s.jobs.is_some())
            .collect();
        if members.len() < 2 {
            continue;
        }
        members.sort_by_key(|s| s.jobs);
        let base = members[0].wall_seconds.median;
        for s in members {
            out.push([
                f.to_owned(),
                s.jobs.map_or_else(String::new, |j| j.to_string()),
                format!("{:.2}", s.wall_seconds.median),
                format!("{:.2} ×", base / s.wall_seconds.median.max(1e-9)),
                format!("{:.1}", s.client_cpu_seconds),
                opt(s.server_cpu_seconds, |v| format!("{v:.1}")),
            ]);
        }
    }
    out
}

/// The table printed on the terminal at the end.
pub fn terminal(r: &BenchReport) -> String {
    let rows = rows(r);
    let mut width: Vec<usize> = HEADERS.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&width)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = w - c.chars().count();
                if i == 0 || i >= 9 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = format!(
        "pgtide bench ({} build): {} ({}), {} run(s){}, --jobs {}; {} cores\n\n",
        r.pgtide_build,
        r.database.name,
        mib(r.database.size_bytes) + " MiB",
        r.settings.runs,
        if r.settings.warmup {
            " after a warm-up"
        } else {
            ""
        },
        r.settings.jobs,
        r.machine.cores
    );
    out.push_str(&line(HEADERS.to_vec()));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    for l in ratio_legend(r) {
        out.push_str(&format!("{l}\n"));
    }
    for t in &r.targets {
        out.push_str(&format!(
            "target {}: {} — {}\n",
            t.target,
            t.measured,
            if t.met { "met" } else { "NOT met" }
        ));
    }
    for s in &r.steps {
        match s.matches_source {
            Some(true) => out.push_str(&format!(
                "{}: the restored database matches the source\n",
                s.name
            )),
            Some(false) => out.push_str(&format!(
                "{}: THE RESTORED DATABASE DIFFERS FROM THE SOURCE\n",
                s.name
            )),
            None => {}
        }
    }
    for s in &r.skipped {
        out.push_str(&format!("skipped {}: {}\n", s.step, s.reason));
    }
    if let Some(why) = &r.server.cpu_unavailable {
        out.push_str(&format!("server CPU not measured: {why}\n"));
    }
    out
}

/// The section of docs/BENCHMARKS.md: machine, command, data set, table,
/// every run.
pub fn markdown(r: &BenchReport) -> String {
    let m = &r.machine;
    let mut out = format!(
        "## pgtide bench, {}\n\n```sh\n{}\n```\n\n",
        r.started_at.format("%Y-%m-%d"),
        r.command
    );
    out.push_str("| machine | |\n| --- | --- |\n");
    out.push_str(&format!(
        "| CPU | {} × {} |\n| memory | {} |\n| OS | {}, Linux {} |\n| PostgreSQL | {} ({}) |\n| pgtide | {} ({} build) |\n",
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown"),
        opt(m.memory_bytes, |b| format!("{:.1} GiB", b as f64 / 1073741824.0)),
        m.os.as_deref().unwrap_or("unknown"),
        m.kernel.as_deref().unwrap_or("unknown"),
        r.server.version,
        if r.server.local { "same machine" } else { "remote" },
        r.pgtide_version,
        r.pgtide_build
    ));
    for t in &r.tools {
        out.push_str(&format!(
            "| {} | {} |\n",
            t.name,
            t.version.as_deref().unwrap_or("version unknown")
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "Database `{}`: {} MiB, {} tables{}; cluster {} MiB. {} run(s){}, median wall time (spread min–max); `--jobs {}`; page cache {}{}.\n\n",
        r.database.name,
        mib(r.database.size_bytes),
        r.database.tables,
        r.database
            .generated_scale
            .map_or(String::new(), |s| format!(" (`--generate {s}`)")),
        mib(r.database.cluster_size_bytes),
        r.settings.runs,
        if r.settings.warmup { " after a warm-up" } else { "" },
        r.settings.jobs,
        if r.settings.page_cache_dropped {
            "dropped before every step"
        } else {
            "not dropped"
        },
        if r.settings.only.iter().any(|o| o == "wal") {
            format!("; WAL burst {} MiB", mib(r.settings.wal_burst_bytes))
        } else {
            String::new()
        }
    ));
    if !r.targets.is_empty() {
        out.push_str("| target | measured | met? |\n| --- | --- | --- |\n");
        for t in &r.targets {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                t.target,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!("| {} |\n", HEADERS.join(" | ")));
    out.push_str(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |\n",
    );
    for row in rows(r) {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out.push('\n');
    for l in ratio_legend(r) {
        out.push_str(&format!("- {l} (wall time, medians)\n"));
    }
    for s in &r.steps {
        if let Some(m) = s.matches_source {
            out.push_str(&format!(
                "- {}: the restored database {} the source (rows counted and hashed, every table)\n",
                s.name,
                if m { "matches" } else { "**differs from**" }
            ));
        }
    }
    for s in &r.skipped {
        out.push_str(&format!("- skipped {}: {}\n", s.step, s.reason));
    }
    if let Some(why) = &r.server.cpu_unavailable {
        out.push_str(&format!("- server CPU not measured: {why}\n"));
    }
    let scaling = scaling_rows(r);
    if !scaling.is_empty() {
        out.push_str("\nWith more workers (speed-up: wall time with the fewest workers over this one's):\n\n");
        out.push_str("| step | workers | wall s | speed-up | client CPU s | server CPU s |\n");
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for row in scaling {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
    }
    out.push_str("\nCommands:\n\n");
    for s in &r.steps {
        out.push_str(&format!("- {}: `{}`\n", s.name, s.command));
    }
    out.push_str(
        "\nEvery run (wall s, client CPU s, server CPU s, other CPU s, peak RSS MiB):\n\n```\n",
    );
    for s in &r.steps {
        for c in &s.runs {
            out.push_str(&format!(
                "{:<36} {:>8.2} {:>7.1} {:>7} {:>7} {:>7}\n",
                s.name,
                c.wall_seconds,
                c.client_cpu_seconds,
                opt(c.server_cpu_seconds, |v| format!("{v:.1}")),
                opt(c.other_cpu_seconds, |v| format!("{v:.1}")),
                mib(c.peak_rss_bytes)
            ));
        }
    }
    out.push_str("```\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(Spread::of(&[4.0, 1.0]).unwrap().median, 2.5);
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn bound_by_reads_the_cpu_figures() {
        // 2 cores for 10 s: 16 CPU s is the 80% mark.
        assert_eq!(
            bound_by(10.0, 12.0, Some(5.0), 2).as_deref(),
            Some("client CPU")
        );
        assert_eq!(
            bound_by(10.0, 3.0, Some(14.0), 2).as_deref(),
            Some("server CPU")
        );
        assert_eq!(
            bound_by(10.0, 3.0, Some(4.0), 2).as_deref(),
            Some("I/O or waiting")
        );
        assert_eq!(bound_by(10.0, 3.0, None, 2), None);
        assert_eq!(bound_by(10.0, 17.0, None, 2).as_deref(), Some("client CPU"));
        assert_eq!(bound_by(0.0, 1.0, Some(1.0), 2), None);
    }

    fn cost(wall: f64) -> RunCost {
        RunCost {
            wall_seconds: wall,
            client_cpu_seconds: 1.0,
            server_cpu_seconds: Some(1.0),
            other_cpu_seconds: None,
            peak_rss_bytes: 1 << 20,
        }
    }

    #[test]
    fn scaling_rows_compare_worker_counts() {
        let step = |jobs: usize, wall: f64| {
            let mut s = summarise(
                "x",
                "dump",
                "pgtide",
                "x",
                vec![cost(wall)],
                None,
                None,
                None,
                2,
            )
            .unwrap();
            s.name = format!("pgtide dump -j{jobs}");
            s.family = "pgtide dump".into();
            s.jobs = Some(jobs);
            s
        };
        let lone = summarise(
            "pg_basebackup -Ft none",
            "backup",
            "pg_basebackup",
            "x",
            vec![cost(1.0)],
            None,
            None,
            None,
            2,
        )
        .unwrap();
        let r = BenchReport {
            pgtide_version: "0".into(),
            pgtide_build: "debug".into(),
            command: "pgtide bench".into(),
            started_at: chrono::Utc::now(),
            seconds: 1.0,
            machine: Machine::read(),
            server: ServerInfo {
                version: "15".into(),
                local: true,
                data_directory: None,
                cpu_unavailable: None,
            },
            tools: vec![],
            database: DatabaseInfo {
                name: "d".into(),
                generated_scale: Some(1),
                size_bytes: 1,
                cluster_size_bytes: 1,
                tables: 1,
            },
            settings: SettingsInfo {
                jobs: 2,
                scale_jobs: vec![1, 4],
                runs: 1,
                warmup: false,
                only: vec!["dump".into()],
                wal_burst_bytes: 1,
                page_cache_dropped: false,
                repository: "r".into(),
            },
            steps: vec![step(4, 2.0), step(1, 6.0), lone],
            skipped: vec![],
            targets: vec![],
        };
        let rows = scaling_rows(&r);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], "1");
        assert_eq!(rows[1][3], "3.00 ×");
        assert!(markdown(&r).contains("| pgtide dump | 4 | 2.00 | 3.00 × |"));
    }

    #[test]
    fn ratios_compare_medians() {
        let mut steps = vec![
            summarise(
                "a",
                "dump",
                "pgtide",
                "a",
                vec![cost(2.0), cost(4.0), cost(3.0)],
                Some(6_000_000),
                None,
                None,
                2,
            )
            .unwrap(),
            summarise(
                "b",
                "dump",
                "pg_dump",
                "b",
                vec![cost(6.0)],
                None,
                Some(1),
                None,
                2,
            )
            .unwrap(),
        ];
        assert_eq!(steps[0].mb_per_second, Some(2.0));
        fill_ratios(&mut steps, |n| {
            if n == "a" {
                vec!["b".into(), "absent".into()]
            } else {
                vec![]
            }
        });
        assert_eq!(steps[0].ratios.len(), 1);
        assert!((steps[0].ratios[0].ratio - 0.5).abs() < 1e-9);
        assert!(steps[1].ratios.is_empty());
        steps[0].name = "pgtide dump -j2".into();
        steps[0].tool = "pgtide".into();
        steps[0].ratios[0].peer = "pg_dump -Fd -j2".into();
        steps[1].name = "pg_dump -Fd -j2".into();
        let t = check_targets(&steps, 2);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(
            t[0].target,
            "pgtide dump -j2 ≤ 0.45 × pg_dump -Fd -j2 (wall time)"
        );
        assert_eq!(t[0].measured, "0.50 × (3.00 s against 6.00 s)");
        assert!(!t[0].met);
        assert!(t[1].met && t[1].measured.starts_with("largest 1.0 MiB"));
        assert_eq!(requests_text(&steps[0]), "–");
        steps[1].requests = Some(serde_json::json!({"put": 0, "get": 0}));
        assert_eq!(requests_text(&steps[1]), "0");
        steps[1].bytes_stored = Some(64 << 20);
        steps[1].requests = Some(serde_json::json!({"put": 2, "get": 0, "list": 1}));
        assert_eq!(requests_text(&steps[1]), "put 2 (1 per 32.0 MiB), list 1");
    }
}
