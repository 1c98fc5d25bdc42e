//! The drill of a physical backup: restore into the scratch directory,
//! start the private server, let recovery reach its target, then check it.

use super::*;

fn pitr_settings(s: &DrillSettings, plan: &Plan) -> PitrSettings {
    PitrSettings {
        pgdata: plan.data_dir.clone(),
        target: s.target.clone(),
        action: "promote".into(),
        timeline: "latest".into(),
        inclusive: true,
        force: false,
        jobs: s.jobs,
        tablespace_map: plan.tablespaces.clone(),
        start: false,
        pg_bin: s.pg_bin.clone(),
        os_user: s.os_user.clone(),
        repo_url: s.repo_url.clone(),
        secret_args: s.secret_args.clone(),
        settings: plan::server_settings(&plan.scratch, plan.major),
        zero_databases: Default::default(),
    }
}

pub(super) async fn flow(
    repo: &Repository,
    s: &DrillSettings,
    plan: &Plan,
    m: &BackupManifest,
    facts: &Facts,
    scr: &Scratch,
    steps: &mut Steps,
) {
    let t = steps.begin("restoring the backup's files");
    let ps = pitr_settings(s, plan);
    let prepared = async {
        scr.write(plan::HBA_FILE, plan::HBA)?;
        scr.write(plan::IDENT_FILE, "")?;
        scr.give_to_server_user()?;
        let r = physical_restore::run(
            repo,
            &m.id,
            &ps,
            steps.progress.clone(),
            steps.cancel.clone(),
        )
        .await?;
        // Clusters packaged the Debian way keep postgresql.conf outside the
        // data directory, so the backup has none; the server needs one (its
        // settings then come from postgresql.auto.conf and the defaults).
        if !plan.data_dir.join("postgresql.conf").exists() {
            scr.write_data_file("postgresql.conf", plan::NO_CONF)?;
        }
        Ok::<_, JobError>(r)
    }
    .await;
    let ok = steps.end(
        "restore",
        t,
        prepared.map(|r| {
            format!(
                "{} files, {} into {}",
                r.files,
                human_bytes(r.bytes),
                r.pgdata
            )
        }),
    );
    if !ok {
        return;
    }

    let t = steps.begin("recovering: PostgreSQL replays the archived WAL");
    let cancel = steps.cancel.clone();
    let recovered = cancellable(&cancel, physical_restore::start_and_wait(&ps, plan.major));
    let summary = match recovered.await {
        Ok((summary, tli)) => {
            // PostgreSQL 15+ appends resource usage to "redo done at …".
            let shown = summary
                .split("; ")
                .map(|l| l.split(" system usage:").next().unwrap_or(l))
                .collect::<Vec<_>>()
                .join("; ");
            let d = format!(
                "promoted{}: {}",
                tli.map(|t| format!(" to timeline {t}")).unwrap_or_default(),
                if shown.is_empty() { "-" } else { &shown }
            );
            steps.end("recovery", t, Ok(d));
            summary
        }
        Err(e) => {
            let e = match e.to_string() {
                m if m.contains("before configured recovery target was reached") => {
                    JobError::RecoveryShort(format!(
                        "recovery ended before reaching {}: the archive lacks the WAL up to it",
                        plan.target
                    ))
                }
                _ => e,
            };
            steps.end("recovery", t, Err(e));
            return;
        }
    };

    let t = steps.begin("checking where recovery stopped");
    let users = checks::superusers(s.superuser.as_deref(), s.os_user.as_deref(), &plan.data_dir);
    let session = cancellable(&cancel, checks::superuser_session(&plan.scratch, &users)).await;
    let (client, user) = match session {
        Ok(x) => x,
        Err(e) => {
            steps.end("recovery_point", t, Err(e));
            return;
        }
    };
    let r = cancellable(&cancel, recovery_point(&client, m, s, facts, &summary)).await;
    steps.end("recovery_point", t, r);

    let dbs = match cancellable(&cancel, checks::databases(&client)).await {
        Ok(d) => d,
        Err(e) => {
            let t = Instant::now();
            steps.end("amcheck", t, Err(e));
            return;
        }
    };
    drop(client);
    amcheck_step(steps, plan, &user, &dbs).await;

    let t = steps.begin("reading every table");
    let mut tables = 0usize;
    let mut rows = 0u64;
    let mut r = Ok(());
    for db in &dbs {
        match cancellable(&cancel, checks::count_tables(&plan.scratch, &user, db)).await {
            Ok(c) => {
                tables += c.len();
                rows += c.values().sum::<u64>();
            }
            Err(e) => {
                r = Err(e);
                break;
            }
        }
    }
    steps.end(
        "tables_readable",
        t,
        r.map(|()| {
            format!(
                "{tables} tables ({rows} rows) read in {} databases",
                dbs.len()
            )
        }),
    );

    if let Some(sql) = &s.sql {
        let db = s.sql_database.clone().unwrap_or_else(|| "postgres".into());
        sql_step(steps, plan, &user, &db, sql).await;
    }
}

async fn recovery_point(
    c: &tokio_postgres::Client,
    m: &BackupManifest,
    s: &DrillSettings,
    facts: &Facts,
    summary: &str,
) -> Result<String, JobError> {
    let r = checks::recovered(c).await?;
    if r.in_recovery {
        return Err(JobError::DrillCheck(
            "the scratch server is still in recovery after the target".into(),
        ));
    }
    let replay = r.replay_lsn.ok_or_else(|| {
        JobError::DrillCheck("the scratch server reports no replayed WAL position".into())
    })?;
    let seg = m.wal_segment_size;
    match plan::expect(&s.target, m.end_lsn, m.timeline, &facts.held, seg) {
        Expect::AtLeast { lsn, timeline, why } => {
            if replay < lsn {
                let gap = plan::first_gap(&facts.held, timeline, replay, lsn, seg)
                    .map(|g| format!(": segment {g} is missing from the archive"))
                    .unwrap_or_default();
                return Err(JobError::RecoveryShort(format!(
                    "recovery stopped at {replay}, before {why} ({lsn}){gap}"
                )));
            }
            Ok(format!(
                "replayed to {replay} (expected at least {lsn}, {why}); now on timeline {}",
                r.timeline
            ))
        }
        Expect::Stopped => {
            if !summary.contains("recovery stopping") {
                return Err(JobError::RecoveryShort(format!(
                    "recovery ended at {replay} without reaching {} (the server said: {summary})",
                    plan::target_text(&s.target)
                )));
            }
            let stop = summary
                .split("; ")
                .find(|l| l.contains("recovery stopping"))
                .unwrap_or(summary);
            Ok(format!(
                "{stop}; replayed to {replay}, now on timeline {}",
                r.timeline
            ))
        }
    }
}
