//! Running the benchmark's steps: the facts read once (server, tools,
//! sizes), the reset before each step (scratch databases and directories),
//! one measured step, the WAL burst, and the clean-up.
//!
//! Owns: the bench's scratch databases (`pgtide_bench_*`), replication
//! slots (`pgtide_bench_*`) and work directory. Must never: write into the
//! measured database, or remove anything outside the work directory.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

mod finish;
mod wal;

use super::data::{quote_ident, quote_literal, SCRATCH_PREFIX};
use super::machine::Machine;
use super::measure::{self, ServerCpu};
use super::pgbackrest::{self, PgBackRest};
use super::report::{self, BenchReport, RunCost, Skipped};
use super::steps::{self, CommandContext, Group, Step, Task};
use super::{io_err, session, sql_err, BenchError, BenchSettings, Recorded};
use crate::pg::conninfo::ConnInfo;
use crate::pg::lsn::Lsn;

const RESTORE_DB_PGTIDE: &str = "pgtide_bench_restore_pgtide";
const RESTORE_DB_PG_RESTORE: &str = "pgtide_bench_restore_pg_restore";
const WAL_DB: &str = "pgtide_bench_wal";

/// What one measured step gave.
#[derive(Debug, Clone)]
pub struct Measured {
    pub cost: RunCost,
    pub command: String,
    /// The dump or backup a pgtide step made (deleted when no longer used).
    pub set_id: Option<String>,
    pub bytes_read: Option<u64>,
    pub bytes_stored: Option<u64>,
    pub requests: Option<serde_json::Value>,
}

pub struct Bench {
    cancel: tokio_util::sync::CancellationToken,
    exe: PathBuf,
    jobs: usize,
    conn: ConnInfo,
    admin: Client,
    database: String,
    generated: Option<u32>,
    version: String,
    data_dir: Option<PathBuf>,
    local: bool,
    server_cpu: Result<ServerCpu, String>,
    db_size: u64,
    cluster_size: u64,
    tables: u64,
    wal_segment_size: u64,
    tools: BTreeMap<&'static str, PathBuf>,
    pg_bin: Option<PathBuf>,
    pgbackrest: Result<PgBackRest, String>,
    /// Why the WAL steps cannot run, if they cannot.
    wal_unavailable: Option<String>,
    work: PathBuf,
    own_work: bool,
    repo: String,
    dump_id: Option<String>,
    backup_id: Option<String>,
    wal_end: Option<Lsn>,
    wal_bytes: u64,
    cache_dropped: bool,
    drop_caches: bool,
    wal_db_made: bool,
    machine: Machine,
}

/// Why the WAL steps (two slots of their own) cannot run on a server with
/// these settings, if they cannot.
fn wal_check(wal_level: &str, free_slots: i32, may_replicate: Option<bool>) -> Option<String> {
    if wal_level == "minimal" {
        Some("the server has wal_level = minimal (replica is needed)".to_owned())
    } else if free_slots < 2 {
        Some(format!(
            "the server has {} free replication slot(s) and the WAL steps need 2 (max_replication_slots)",
            free_slots.max(0)
        ))
    } else if may_replicate != Some(true) {
        Some("the role has no REPLICATION privilege".to_owned())
    } else {
        None
    }
}

/// `name` in `--pg-bin`, else on PATH.
fn find_tool(name: &str, pg_bin: Option<&Path>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = pg_bin
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::split_paths(&path));
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

fn is_local_host(ci: &ConnInfo) -> bool {
    ci.targets().first().is_some_and(|t| {
        t.is_unix_socket()
            || matches!(t.host_name().as_str(), "localhost" | "127.0.0.1" | "::1")
            || t.hostaddr.is_some_and(|a| a.is_loopback())
    })
}

async fn one_text(c: &Client, sql: &str) -> Result<String, BenchError> {
    let row = c
        .query_one(sql, &[])
        .await
        .map_err(sql_err(format!("run {sql}")))?;
    Ok(row.get(0))
}

impl Bench {
    /// Reads the facts: the server, its sizes, the tools, pgBackRest's
    /// chances; makes the work directory.
    pub async fn prepare(
        s: &BenchSettings,
        database: &str,
        generated: Option<u32>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<Bench, BenchError> {
        let conn = s.conn.with_dbname(database);
        let admin = session(&conn).await?;
        let version = one_text(&admin, "SELECT current_setting('server_version')").await?;
        let data_dir = admin
            .query_one("SELECT current_setting('data_directory')", &[])
            .await
            .ok()
            .map(|r| PathBuf::from(r.get::<_, String>(0)));
        let socket_dir =
            one_text(&admin, "SELECT current_setting('unix_socket_directories')").await?;
        let socket_dir = socket_dir.split(',').next().unwrap_or("").trim().to_owned();
        let port: u16 = one_text(&admin, "SELECT current_setting('port')")
            .await?
            .parse()
            .unwrap_or(5432);
        let user = one_text(&admin, "SELECT current_user::text").await?;
        let sizes = admin
            .query_one(
                "SELECT pg_database_size(current_database()), \
                 (SELECT sum(pg_database_size(oid))::bigint FROM pg_database), \
                 (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                  AND n.nspname NOT LIKE 'pg_toast%'), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
                &[],
            )
            .await
            .map_err(sql_err("read the database's size"))?;
        let wal = admin
            .query_one(
                "SELECT current_setting('wal_level'), \
                 current_setting('max_replication_slots')::int \
                   - (SELECT count(*) FROM pg_replication_slots WHERE slot_name NOT LIKE 'pgtide\\_bench\\_%')::int, \
                 (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
                &[],
            )
            .await
            .map_err(sql_err("read the replication settings"))?;
        let wal_unavailable = wal_check(&wal.get::<_, String>(0), wal.get(1), wal.get(2));
        let local = is_local_host(&conn);
        let server_cpu = match (&data_dir, local) {
            (_, false) => {
                Err("the server is not on this machine (--db names another host)".to_owned())
            }
            (None, true) => {
                Err("this role cannot read data_directory (needs pg_read_all_settings)".to_owned())
            }
            (Some(d), true) => ServerCpu::open(d),
        };
        let tools = [
            "pg_dump",
            "pg_restore",
            "pg_basebackup",
            "pg_receivewal",
            "pgbackrest",
            "tar",
            "zstd",
        ]
        .into_iter()
        .filter_map(|t| Some((t, find_tool(t, s.pg_bin.as_deref())?)))
        .collect::<BTreeMap<_, _>>();
        let (work, own_work) = match &s.work {
            Some(w) => (w.clone(), false),
            None => (
                std::env::temp_dir().join(format!("pgtide-bench-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&work).map_err(io_err(format!("create {}", work.display())))?;
        if own_work {
            // pgBackRest runs as the server's OS user and must get through.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err(format!("chmod {}", work.display())))?;
        }
        let repo = s
            .repo
            .clone()
            .unwrap_or_else(|| work.join("repo").to_string_lossy().into_owned());
        let pgbackrest = match (tools.get("pgbackrest"), &data_dir, local) {
            (None, _, _) => Err("pgbackrest not found on PATH".to_owned()),
            (_, _, false) => Err(
                "pgBackRest reads the data directory, and the server is not on this machine"
                    .to_owned(),
            ),
            (_, None, _) => Err("this role cannot read data_directory".to_owned()),
            (_, _, _) if socket_dir.is_empty() => {
                Err("the server listens on no Unix socket, which pgBackRest needs".to_owned())
            }
            (Some(program), Some(d), true) => pgbackrest::owner_check(d).and_then(|run_as| {
                let dir = work.join("pgbackrest");
                let facts = pgbackrest::Facts {
                    data_dir: d,
                    socket_dir: &socket_dir,
                    port,
                    user: &user,
                    jobs: s.jobs,
                };
                let config = dir.join("pgbackrest.conf");
                let made = (|| -> std::io::Result<()> {
                    for sub in ["", "repo", "log", "lock", "spool"] {
                        std::fs::create_dir_all(dir.join(sub))?;
                        pgbackrest::give(&dir.join(sub), run_as)?;
                    }
                    std::fs::write(&config, pgbackrest::config_text(&dir, &facts))
                })();
                made.map_err(|e| {
                    format!("cannot set up its scratch directory {}: {e}", dir.display())
                })?;
                Ok(PgBackRest {
                    program: program.clone(),
                    config,
                    dir,
                    run_as,
                })
            }),
        };
        Ok(Bench {
            cancel,
            exe: PathBuf::from(
                crate::jobs::pgtide_executable().map_err(io_err("find this executable"))?,
            ),
            jobs: s.jobs,
            conn,
            admin,
            database: database.to_owned(),
            generated,
            version,
            data_dir,
            local,
            server_cpu,
            db_size: u64::try_from(sizes.get::<_, i64>(0)).unwrap_or(0),
            cluster_size: u64::try_from(sizes.get::<_, Option<i64>>(1).unwrap_or(0)).unwrap_or(0),
            tables: u64::try_from(sizes.get::<_, i64>(2)).unwrap_or(0),
            wal_segment_size: u64::try_from(sizes.get::<_, Option<i64>>(3).unwrap_or(16 << 20))
                .unwrap_or(16 << 20),
            tools,
            pg_bin: s.pg_bin.clone(),
            pgbackrest,
            wal_unavailable,
            work,
            own_work,
            repo,
            dump_id: None,
            backup_id: None,
            wal_end: None,
            wal_bytes: 0,
            cache_dropped: false,
            drop_caches: s.drop_caches,
            wal_db_made: false,
            machine: Machine::read(),
        })
    }

    /// The steps of the `--only` groups that can run here, and those that
    /// cannot, with the reason.
    pub fn choose_steps(&self, s: &BenchSettings) -> (Vec<Step>, Vec<Skipped>) {
        let mut chosen = Vec::new();
        let mut skipped = Vec::new();
        for step in Step::ALL
            .into_iter()
            .filter(|st| s.only.contains(&st.group()))
        {
            let why = match step.tool() {
                _ if step.group() == Group::Wal && self.wal_unavailable.is_some() => {
                    self.wal_unavailable.clone()
                }
                "pgtide" => None,
                "tar" if !self.tools.contains_key("zstd") => {
                    Some("zstd not found on PATH (tar -I zstd needs it)".to_owned())
                }
                "tar" if !self.tools.contains_key("pg_basebackup") => {
                    Some("pg_basebackup, whose output it extracts, was not found".to_owned())
                }
                "pgbackrest" => self.pgbackrest.as_ref().err().cloned(),
                t if !self.tools.contains_key(t) => Some(format!(
                    "{t} not found {}",
                    if s.pg_bin.is_some() {
                        "in --pg-bin or on PATH"
                    } else {
                        "on PATH"
                    }
                )),
                _ => None,
            };
            match why {
                Some(reason) => skipped.push(Skipped {
                    step: step.name(s.jobs),
                    reason,
                }),
                None => chosen.push(step),
            }
        }
        (chosen, skipped)
    }

    fn libpq(&self, db: &str) -> String {
        steps::plain_conninfo(&self.conn.with_dbname(db).to_libpq_string())
    }

    async fn execute(&self, sql: &str) -> Result<(), BenchError> {
        self.admin
            .batch_execute(sql)
            .await
            .map_err(sql_err(format!("run {sql}")))
    }

    async fn drop_database(&self, name: &str) -> Result<(), BenchError> {
        self.execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
            .await
    }

    fn fresh_dir(
        &self,
        dir: &Path,
        create: bool,
        owner: Option<pgbackrest::Owner>,
    ) -> Result<(), BenchError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io_err(format!("remove {}", dir.display())))?;
        }
        if create {
            std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
            use std::os::unix::fs::PermissionsExt;
            // A data directory's mode: pgBackRest's restore wants it.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(format!("chmod {}", dir.display())))?;
            pgbackrest::give(dir, owner).map_err(io_err(format!("chown {}", dir.display())))?;
        }
        Ok(())
    }

    /// Puts back the state a step starts from.
    async fn reset(&self, step: Step) -> Result<(), BenchError> {
        let out = step.output_dir(&self.work);
        match step {
            Step::PgtideRestore => self.drop_database(RESTORE_DB_PGTIDE).await?,
            Step::PgRestore => {
                self.drop_database(RESTORE_DB_PG_RESTORE).await?;
                self.execute(&format!(
                    "CREATE DATABASE {}",
                    quote_ident(RESTORE_DB_PG_RESTORE)
                ))
                .await?;
            }
            Step::PgDump
            | Step::Basebackup0
            | Step::Basebackup1
            | Step::Basebackup3
            | Step::PgtideWal
            | Step::PgtidePhysicalRestore => self.fresh_dir(&out, false, None)?,
            Step::PgReceivewal => self.fresh_dir(&out, true, None)?,
            Step::PgbackrestBackup => {
                let b = self
                    .pgbackrest
                    .as_ref()
                    .map_err(|e| BenchError::Usage(e.clone()))?;
                self.fresh_dir(&out, true, b.run_as)?;
                let mut cmd = self.pgbackrest_command(b);
                cmd.args(["--stanza", steps::PGBACKREST_STANZA, "stanza-create"]);
                let run = self.run_blocking(cmd, "stanza-create").await?;
                if run.cost.code != 0 {
                    return Err(BenchError::StepFailed {
                        step: "pgbackrest stanza-create".into(),
                        code: run.cost.code,
                        tail: run.stderr_tail(),
                    });
                }
            }
            Step::TarExtract => self.fresh_dir(&out, true, None)?,
            Step::PgbackrestRestore => {
                let owner = self.pgbackrest.as_ref().ok().and_then(|b| b.run_as);
                self.fresh_dir(&out, true, owner)?;
            }
            Step::PgtideDump | Step::PgtideBackup1 | Step::PgtideBackup3 => {}
        }
        Ok(())
    }

    fn pgbackrest_command(&self, b: &PgBackRest) -> Command {
        let mut cmd = Command::new(&b.program);
        cmd.arg("--config").arg(&b.config).current_dir(&b.dir);
        if let Some(o) = b.run_as {
            cmd.uid(o.uid).gid(o.gid);
        }
        cmd
    }

    /// Runs `cmd` to its end on the blocking pool. On the cancellation
    /// token the child gets SIGINT (as from a terminal) and, once it has
    /// ended, the bench stops with `Interrupted`.
    async fn run_blocking(
        &self,
        cmd: Command,
        label: &str,
    ) -> Result<measure::ChildRun, BenchError> {
        let prefix = self
            .work
            .join(format!("out-{}", label.replace([' ', '/', ':'], "_")));
        let what = format!("start {:?}", cmd.get_program());
        let pid = std::sync::Arc::new(measure::ChildPid::default());
        let slot = pid.clone();
        let mut task = tokio::task::spawn_blocking(move || measure::run_child(cmd, &prefix, &slot));
        let joined = tokio::select! {
            r = &mut task => r,
            _ = self.cancel.cancelled() => {
                pid.signal(libc::SIGINT);
                task.await
            }
        };
        let run = joined
            .map_err(|e| BenchError::Io {
                context: what.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(io_err(what))?;
        if self.cancel.is_cancelled() {
            return Err(BenchError::Interrupted);
        }
        Ok(run)
    }

    /// Runs `step` once from its reset state and measures it.
    pub async fn measure(&mut self, task: Task) -> Result<Measured, BenchError> {
        let step = task.step;
        let main = task.jobs == self.jobs;
        self.reset(step).await?;
        let (db, pgtide_restore_db, pg_restore_db) = (
            self.libpq(&self.database),
            self.libpq(RESTORE_DB_PGTIDE),
            self.libpq(RESTORE_DB_PG_RESTORE),
        );
        let wal_end = self.wal_end.map(|l| l.to_string());
        let pgbackrest_config = self.pgbackrest.as_ref().ok().map(|b| b.config.clone());
        let ctx = CommandContext {
            db: &db,
            restore_db: if step == Step::PgRestore {
                &pg_restore_db
            } else {
                &pgtide_restore_db
            },
            repo: &self.repo,
            work: &self.work,
            jobs: task.jobs,
            dump_id: self.dump_id.as_deref(),
            backup_id: self.backup_id.as_deref(),
            wal_end: wal_end.as_deref(),
            pgbackrest_config: pgbackrest_config.as_deref(),
        };
        let args: Vec<OsString> = steps::arguments(step, &ctx).map_err(BenchError::Usage)?;
        let mut cmd = match (step.tool(), &self.pgbackrest) {
            ("pgtide", _) => Command::new(&self.exe),
            ("pgbackrest", Ok(b)) => {
                let mut c = Command::new(&b.program);
                c.current_dir(&b.dir);
                if let Some(o) = b.run_as {
                    c.uid(o.uid).gid(o.gid);
                }
                c
            }
            (t, _) => Command::new(
                self.tools
                    .get(t)
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(t)),
            ),
        };
        cmd.args(&args);
        if let Some(p) = &self.conn.password {
            cmd.env("PGPASSWORD", p);
        }
        if let (true, Some(dir)) = (step.is_pgtide(), &self.pg_bin) {
            // pgtide's dump and restore use the peers' pg_dump / pg_restore.
            cmd.env("PGTIDE_PG_DUMP", dir);
        }
        let program = if step.is_pgtide() {
            "pgtide".to_owned()
        } else {
            step.tool().to_owned()
        };
        let command = steps::display(&program, &args);

        self.execute("CHECKPOINT").await?;
        if self.drop_caches {
            self.cache_dropped |= measure::drop_page_cache();
        }
        let server = self.server_cpu.as_ref().ok();
        let before: Vec<u32> = server.map_or_else(Vec::new, |s| s.children());
        let server_before = server.and_then(ServerCpu::seconds);
        let busy_before = measure::machine_busy_seconds();
        let run = self.run_blocking(cmd, &task.name(self.jobs)).await?;
        // The tool's backends end after it does: wait (briefly) until the
        // postmaster has reaped them, so their CPU is counted.
        if let Some(s) = server {
            let t = Instant::now();
            while s.new_connections(&before) > 0 && t.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let server_seconds = match (server_before, server.and_then(ServerCpu::seconds)) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        let busy = match (busy_before, measure::machine_busy_seconds()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        if run.cost.code != 0 {
            return Err(BenchError::StepFailed {
                step: task.name(self.jobs),
                code: run.cost.code,
                tail: run.stderr_tail(),
            });
        }
        let json: Option<serde_json::Value> = step
            .is_pgtide()
            .then(|| serde_json::from_str(&run.stdout_text()).ok())
            .flatten();
        let field = |k: &str| {
            json.as_ref()
                .and_then(|j| j.get(k))
                .filter(|v| !v.is_null())
                .cloned()
        };
        let set_id = field("id").and_then(|v| v.as_str().map(str::to_owned));
        match step {
            Step::PgtideDump if main => self.dump_id = set_id.clone(),
            Step::PgtideBackup1 if main => self.backup_id = set_id.clone(),
            _ => {}
        }
        let bytes_stored = match step {
            Step::PgtideDump | Step::PgtideBackup1 | Step::PgtideBackup3 => {
                field("bytes_stored").and_then(|v| v.as_u64())
            }
            Step::PgtideRestore
            | Step::PgRestore
            | Step::PgtidePhysicalRestore
            | Step::PgbackrestRestore
            | Step::TarExtract => None,
            _ => Some(measure::dir_size(&step.output_dir(&self.work))),
        };
        let bytes_read = Some(match step.group() {
            Group::Dump | Group::Restore => self.db_size,
            Group::Backup | Group::PhysicalRestore => self.cluster_size,
            Group::Wal => self.wal_bytes,
        });
        let client = run.cost.cpu_seconds;
        Ok(Measured {
            cost: RunCost {
                wall_seconds: run.cost.wall_seconds,
                client_cpu_seconds: client,
                server_cpu_seconds: server_seconds,
                other_cpu_seconds: busy
                    .map(|b| (b - client - server_seconds.unwrap_or(0.0)).max(0.0)),
                peak_rss_bytes: run.cost.peak_rss_bytes,
            },
            command,
            set_id: set_id.filter(|_| {
                matches!(
                    step,
                    Step::PgtideDump | Step::PgtideBackup1 | Step::PgtideBackup3
                )
            }),
            bytes_read,
            bytes_stored,
            requests: field("requests"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_in_pg_bin_first() {
        let dir = std::env::temp_dir().join(format!("pgtide-find-tool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sh"), "").unwrap();
        assert_eq!(find_tool("sh", Some(&dir)), Some(dir.join("sh")));
        assert!(find_tool("sh", None).is_some_and(|p| p != dir.join("sh")));
        assert_eq!(find_tool("no-such-tool-pgtide", Some(&dir)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wal_steps_need_two_slots_and_replication() {
        assert_eq!(wal_check("replica", 2, Some(true)), None);
        assert!(wal_check("minimal", 9, Some(true))
            .unwrap()
            .contains("wal_level"));
        assert!(wal_check("logical", 1, Some(true))
            .unwrap()
            .contains("1 free"));
        assert!(wal_check("replica", 5, Some(false))
            .unwrap()
            .contains("REPLICATION"));
    }

    #[test]
    fn local_hosts_are_loopback_or_sockets() {
        let local = |s: &str| is_local_host(&ConnInfo::parse(s).unwrap());
        assert!(local("host=127.0.0.1 port=5432"));
        assert!(local("host=localhost"));
        assert!(local("host=/run/postgresql"));
        assert!(local("host=db.example hostaddr=127.0.0.1"));
        assert!(!local("host=db.example"));
        assert!(!local("host=10.0.0.5"));
    }
}
