//! The drill of a logical dump: initdb a scratch cluster, restore the dump
//! into it, compare every table's rows with the manifest, then check it.

use futures::TryFutureExt;

use super::*;

pub(super) async fn flow(
    repo: &Repository,
    s: &DrillSettings,
    plan: &Plan,
    m: &DumpManifest,
    facts: &Facts,
    scr: &Scratch,
    steps: &mut Steps,
) {
    const USER: &str = "postgres";
    let (Some(initdb), Some(pg_ctl)) = (&facts.initdb, &facts.pg_ctl) else {
        return;
    };
    let cancel = steps.cancel.clone();
    let t = steps.begin("creating the scratch cluster (initdb)");
    let r = async {
        scr.write(plan::HBA_FILE, plan::HBA)?;
        scr.write(plan::IDENT_FILE, "")?;
        scr.give_to_server_user()?;
        let mut c = scratch::as_server_user(initdb, s.os_user.as_deref());
        c.arg("-D").arg(&plan.data_dir).args([
            "-U",
            USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]);
        cancellable(&cancel, crate::pg::tools::run("initdb", c)).await?;
        let mut conf = String::from("\n# written by pgtide drill\n");
        for (k, v) in plan::server_settings(&plan.scratch, facts.major) {
            conf.push_str(&format!(
                "{k} = {}\n",
                physical_restore::recovery::conf_quote(&v)
            ));
        }
        let auto = plan.data_dir.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&conf);
        std::fs::write(&auto, text).map_err(|e| JobError::Io {
            context: format!("write {}", auto.display()),
            source: e,
        })?;
        Ok::<_, JobError>(format!(
            "PostgreSQL {} in {}",
            facts.major,
            plan.data_dir.display()
        ))
    }
    .await;
    if !steps.end("initdb", t, r) {
        return;
    }

    let t = steps.begin("starting the scratch server");
    let log = plan.scratch.join(plan::SERVER_LOG);
    let mut c = scratch::as_server_user(pg_ctl, s.os_user.as_deref());
    c.arg("-D")
        .arg(&plan.data_dir)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "600", "start"])
        .stdout(std::process::Stdio::null());
    let started = crate::pg::tools::run("pg_ctl", c).map_err(|e| {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let last = tail
            .lines()
            .rev()
            .find(|l| l.contains("FATAL"))
            .unwrap_or("");
        JobError::Io {
            context: "start the scratch server".into(),
            source: std::io::Error::other(format!("{e} {last}").trim().to_string()),
        }
    });
    let r = cancellable(&cancel, started).await;
    if !steps.end(
        "start",
        t,
        r.map(|()| "listening on its socket only".into()),
    ) {
        return;
    }

    let db = m.source.database.clone();
    let t = steps.begin("restoring the dump");
    let r = async {
        // A fresh cluster has a `postgres` database; a dump of one takes
        // its place.
        if matches!(db.as_str(), "postgres" | "template1") {
            let ci = checks::scratch_conninfo(&plan.scratch, USER, "template1")?;
            let c = cancellable(&cancel, crate::pg::connect::connect(&ci, "pgtide drill")).await?;
            if db == "postgres" {
                c.simple_query("DROP DATABASE postgres")
                    .await
                    .map_err(JobError::sql(
                        "drop the scratch cluster's postgres database",
                    ))?;
            }
        }
        let rs = RestoreSettings {
            conn: checks::scratch_conninfo(&plan.scratch, USER, &db)?,
            jobs: s.jobs,
            create: db != "template1",
            clean: false,
            schema_only: false,
            data_only: false,
            tables: Vec::new(),
            exclude_tables: Vec::new(),
            dry_run: false,
            no_owner: true,
            no_privileges: true,
            no_tablespaces: true,
            early_index_size: 32 << 20,
            pg_dump: s.pg_dump.clone(),
            prefetch: 4,
        };
        logical_restore::run(repo, &m.id, &rs, steps.progress.clone(), cancel.clone()).await
    }
    .await
    // The loader counts each part's rows against the manifest: in a drill
    // that is the row-count check failing, not a refused statement.
    .map_err(|e| match e {
        JobError::RowCount { .. } => JobError::DrillCheck(format!("row counts differ: {e}")),
        e => e,
    });
    let r = r.map(|r| {
        format!(
            "{} tables, {} rows, {} sequences, {} large objects into database {} (owners and privileges left out: roles are not in a dump)",
            r.tables, r.rows, r.sequences, r.large_objects, r.database
        )
    });
    if !steps.end("restore", t, r) {
        return;
    }

    let t = steps.begin("comparing row counts with the dump's manifest");
    let r = cancellable(&cancel, checks::count_tables(&plan.scratch, USER, &db))
        .await
        .and_then(|counted| {
            let bad = plan::compare_counts(&m.tables, &counted);
            if bad.is_empty() {
                let rows: u64 = m.tables.iter().map(|t| t.rows()).sum();
                return Ok(format!(
                    "{} tables, {rows} rows, as the manifest counted",
                    m.tables.len()
                ));
            }
            let list: Vec<String> = bad
                .iter()
                .take(10)
                .map(|b| match b.found {
                    Some(n) => format!("{} has {n} rows, the dump {}", b.table, b.expected),
                    None => format!("{} is missing (the dump has {} rows)", b.table, b.expected),
                })
                .collect();
            Err(JobError::DrillCheck(format!(
                "{} table{} differ from the dump's manifest: {}",
                bad.len(),
                if bad.len() == 1 { "" } else { "s" },
                list.join("; ")
            )))
        });
    steps.end("row_counts", t, r);

    amcheck_step(steps, plan, USER, std::slice::from_ref(&db)).await;

    if let Some(sql) = &s.sql {
        let sdb = s.sql_database.clone().unwrap_or_else(|| db.clone());
        sql_step(steps, plan, USER, &sdb, sql).await;
    }
}
