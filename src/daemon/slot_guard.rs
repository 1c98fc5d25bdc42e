//! The slot guard: a replication slot keeps every byte of WAL its consumer
//! has not confirmed, so a stalled archive (a store that refuses writes, a
//! stream that cannot keep up) fills the primary's disk until PostgreSQL
//! stops. The guard reads how much WAL the slot retains on an interval;
//! past `wal.slot_warn` it logs and sets a metric, past `wal.slot_max`
//! (when configured) it gives the slot up: the stream is stopped, the slot
//! dropped and created again, and the stream goes on from what the server
//! still has. The archive then has a gap, which `list`, `verify` and
//! `status` report; backups taken before the gap cannot be recovered past
//! it, and the next backup starts a new unbroken chain.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;

use super::config::DaemonConfig;
use super::Shared;
use crate::units::human_bytes;

/// Watch the slot until the daemon stops. `reset` asks the WAL task to
/// drop and recreate the slot (with the retained bytes, for the record).
pub async fn run(shared: Arc<Shared>, reset: mpsc::Sender<u64>) {
    let mut warned = false;
    let mut reported_error = false;
    loop {
        let cfg = shared.cfg();
        tokio::select! {
            _ = tokio::time::sleep(cfg.wal.slot_check_interval) => {}
            _ = shared.cancel.cancelled() => return,
        }
        let retained = match retained_bytes(&cfg).await {
            Ok(r) => {
                reported_error = false;
                shared.state().slot.last_error = None;
                r
            }
            Err(e) => {
                let e = shared.redact(&e);
                if !reported_error {
                    // Handled here: checked again at the next interval.
                    tracing::warn!("slot guard cannot read the slot's retained WAL: {e}");
                    reported_error = true;
                }
                shared.state().slot.last_error = Some(e);
                continue;
            }
        };
        let Some(retained) = retained else {
            shared.state().slot.retained_bytes = None;
            continue;
        };
        let over_warn = retained > cfg.wal.slot_warn;
        {
            let mut st = shared.state();
            st.slot.retained_bytes = Some(retained);
            st.slot.over_warn = over_warn;
        }
        if over_warn && !warned {
            tracing::warn!(
                slot = %cfg.wal.slot,
                "replication slot {} retains {} of WAL, more than wal.slot_warn ({}): the archive is not keeping up",
                cfg.wal.slot,
                human_bytes(retained),
                human_bytes(cfg.wal.slot_warn)
            );
        } else if !over_warn && warned {
            tracing::info!(slot = %cfg.wal.slot, "the slot's retained WAL is below wal.slot_warn again");
        }
        warned = over_warn;
        if let Some(max) = cfg.wal.slot_max {
            if retained > max {
                tracing::error!(
                    slot = %cfg.wal.slot,
                    "replication slot {} retains {}, more than wal.slot_max ({}): giving the slot up so the server can free its WAL; the archive will have a gap (hint: take a new backup once the archive works again)",
                    cfg.wal.slot,
                    human_bytes(retained),
                    human_bytes(max)
                );
                // The WAL task owns the stream, which holds the slot active.
                let _ = reset.send(retained).await;
            }
        }
    }
}

/// Bytes of WAL the slot retains: `None` when the slot does not exist or
/// has no restart point yet.
async fn retained_bytes(cfg: &DaemonConfig) -> Result<Option<u64>, String> {
    let client = crate::pg::connect::connect(&cfg.db, "pgtide slot guard")
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_opt(
            "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() \
                      THEN COALESCE(pg_catalog.pg_last_wal_receive_lsn(), pg_catalog.pg_last_wal_replay_lsn()) \
                      ELSE pg_catalog.pg_current_wal_lsn() END \
                    - restart_lsn)::bigint \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&cfg.wal.slot],
        )
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })?;
    Ok(row
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .map(|b| b.max(0) as u64))
}

/// Drop the slot (the stream is stopped), record what happened. The WAL
/// task then starts the stream again, creating the slot.
pub(super) async fn reset_slot(shared: &Shared, cfg: &DaemonConfig, retained: u64) {
    let started_at = Utc::now();
    let result = async {
        let client = crate::pg::connect::connect(&cfg.db, "pgtide slot guard")
            .await
            .map_err(|e| e.to_string())?;
        // The walsender may take a moment to let go of the slot.
        let mut last = String::new();
        for _ in 0..20 {
            match client
                .execute(
                    "SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
                     FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                    &[&cfg.wal.slot],
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    last = e
                        .as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_string());
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        Err(last)
    }
    .await;
    let archived = crate::pg::lsn::Lsn(
        shared
            .live
            .archived
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    let (ok, message) = match &result {
        Ok(()) => {
            let mut st = shared.state();
            st.slot.resets += 1;
            st.slot.last_reset = Some(Utc::now());
            shared.metrics.slot_resets.inc();
            (
                true,
                format!(
                    "dropped slot {} retaining {} (more than wal.slot_max); the archive ends at {archived} and has a gap after it",
                    cfg.wal.slot,
                    human_bytes(retained)
                ),
            )
        }
        Err(e) => (false, format!("could not drop slot {}: {e}", cfg.wal.slot)),
    };
    tracing::error!("slot guard: {message}");
    // A reset is recorded as a failure either way: the archive has a gap
    // (or the slot still fills the disk), which is what alerts are for.
    let _ = ok;
    let mut record = shared.failure("slot", started_at, "slot_max", message);
    record.bytes = retained;
    shared.finish(record).await;
}
