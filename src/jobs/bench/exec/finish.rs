//! After the runs: the restored databases checked against the source, the
//! earlier runs' sets deleted, the scratch databases and directory removed,
//! and the report put together.

use super::*;

impl Bench {
    /// Row counts and a hash of every row, per table, of database `db`.
    async fn fingerprint(&self, db: &str) -> Result<Vec<(String, i64, i64)>, BenchError> {
        let c = session(&self.conn.with_dbname(db)).await?;
        let tables = c
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
                &[],
            )
            .await
            .map_err(sql_err(format!("list the tables of {db}")))?;
        let mut out = Vec::new();
        for t in tables {
            let name: String = t.get(0);
            let row = c
                .query_one(
                    &format!("SELECT count(*), coalesce(sum(hashtext(x::text)::bigint), 0)::bigint FROM {name} x"),
                    &[],
                )
                .await
                .map_err(sql_err(format!("read {name} in {db}")))?;
            out.push((name, row.get(0), row.get(1)));
        }
        Ok(out)
    }

    /// Drops the databases the logical restores made.
    pub async fn drop_restored(&self) -> Result<(), BenchError> {
        self.drop_database(RESTORE_DB_PGTIDE).await?;
        self.drop_database(RESTORE_DB_PG_RESTORE).await
    }

    /// For each logical restore among `steps`: whether the database its
    /// last run restored holds exactly the source's rows (count and hash
    /// of every row, per table).
    pub async fn restores_match(&self, steps: &[Step]) -> Result<BTreeMap<Step, bool>, BenchError> {
        let mut out = BTreeMap::new();
        let targets: Vec<(Step, &str)> = [
            (Step::PgtideRestore, RESTORE_DB_PGTIDE),
            (Step::PgRestore, RESTORE_DB_PG_RESTORE),
        ]
        .into_iter()
        .filter(|(s, _)| steps.contains(s))
        .collect();
        if targets.is_empty() {
            return Ok(out);
        }
        let source = self.fingerprint(&self.database).await?;
        for (step, db) in targets {
            let restored = self.fingerprint(db).await?;
            if restored != source {
                // Handled here: the report says false; the CLI fails on it.
                tracing::warn!(
                    "{db} differs from {}: {restored:?} against {source:?}",
                    self.database
                );
            }
            out.insert(step, restored == source);
        }
        Ok(out)
    }

    /// Deletes a dump or backup an earlier run made (untimed).
    pub async fn delete_set(&self, id: &str) {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["delete", id, "--repo", &self.repo]);
        match self.run_blocking(cmd, "delete").await {
            Ok(r) if r.cost.code == 0 => {}
            Ok(r) => tracing::warn!(
                "could not delete {id} from {}: {}",
                self.repo,
                r.stderr_tail()
            ),
            Err(e) => tracing::warn!("could not delete {id} from {}: {e}", self.repo),
        }
    }

    /// Drops the scratch databases and slots; removes the work directory
    /// (unless it was given, or `--keep`).
    pub async fn clean_up(&self, keep: bool) {
        self.drop_slots().await;
        for db in [RESTORE_DB_PGTIDE, RESTORE_DB_PG_RESTORE, WAL_DB] {
            debug_assert!(db.starts_with(SCRATCH_PREFIX));
            if let Err(e) = self.drop_database(db).await {
                tracing::warn!("could not drop scratch database {db}: {e}");
            }
        }
        if self.own_work && !keep {
            if let Err(e) = std::fs::remove_dir_all(&self.work) {
                tracing::warn!("could not remove {}: {e}", self.work.display());
            }
        }
    }

    /// The report of the recorded runs.
    pub fn report(
        &self,
        s: &BenchSettings,
        started_at: chrono::DateTime<chrono::Utc>,
        seconds: f64,
        recorded: Recorded,
        skipped: Vec<Skipped>,
        matches: BTreeMap<Step, bool>,
    ) -> BenchReport {
        let cores = self.machine.cores;
        let names: Vec<(String, Task)> = recorded.keys().map(|t| (t.name(s.jobs), *t)).collect();
        let mut out: Vec<report::StepReport> = recorded
            .into_iter()
            .filter_map(|(task, (runs, m))| {
                let m = m?;
                let mut r = report::summarise(
                    &task.name(s.jobs),
                    task.step.group().key(),
                    task.step.tool(),
                    &m.command,
                    runs,
                    m.bytes_read,
                    m.bytes_stored,
                    m.requests,
                    cores,
                )?;
                r.family = task.step.name(1).replace(" -j1", "");
                r.jobs = task.step.uses_jobs().then_some(task.jobs);
                r.matches_source = matches
                    .get(&task.step)
                    .copied()
                    .filter(|_| task.jobs == s.jobs);
                Some(r)
            })
            .collect();
        report::fill_ratios(&mut out, |name| {
            names
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.peers().into_iter().map(|p| p.name(s.jobs)).collect())
                .unwrap_or_default()
        });
        BenchReport {
            pgtide_version: env!("CARGO_PKG_VERSION").to_owned(),
            pgtide_build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
            command: s.command_line.clone(),
            started_at,
            seconds,
            machine: self.machine.clone(),
            tools: self
                .tools
                .iter()
                .map(|(name, path)| report::Tool {
                    name: (*name).to_owned(),
                    path: path.display().to_string(),
                    version: tool_version(name, path),
                })
                .collect(),
            server: report::ServerInfo {
                version: self.version.clone(),
                local: self.local && self.server_cpu.is_ok(),
                data_directory: self.data_dir.as_ref().map(|d| d.display().to_string()),
                cpu_unavailable: self.server_cpu.as_ref().err().cloned(),
            },
            database: report::DatabaseInfo {
                name: self.database.clone(),
                generated_scale: self.generated,
                size_bytes: self.db_size,
                cluster_size_bytes: self.cluster_size,
                tables: self.tables,
            },
            settings: report::SettingsInfo {
                jobs: s.jobs,
                scale_jobs: s.scale_jobs.clone(),
                runs: s.runs,
                warmup: s.warmup,
                only: s.only.iter().map(|g| g.key().to_owned()).collect(),
                wal_burst_bytes: s.wal_burst,
                page_cache_dropped: self.cache_dropped,
                repository: self.repo.clone(),
            },
            targets: report::check_targets(&out, s.jobs),
            steps: out,
            skipped,
        }
    }
}

/// The first line `name --version` prints (pgBackRest: `version`).
fn tool_version(name: &str, path: &Path) -> Option<String> {
    let arg = if name == "pgbackrest" {
        "version"
    } else {
        "--version"
    };
    let out = Command::new(path).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_owned())
}
