//! The daemon's WAL task: `wal stream` kept running — restarted with
//! backoff after a failure, started again when a reload changed its
//! settings, and, when the slot guard asks, stopped while the slot is
//! dropped and recreated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;

use super::{slot_guard, Shared};
use crate::jobs::wal::stream::StreamSettings;

/// Keep `wal stream` running: restart it with backoff after a failure, and
/// drop and recreate the slot when the slot guard asks.
pub(super) async fn wal_task(shared: Arc<Shared>, mut reset: mpsc::Receiver<u64>) {
    const FIRST: Duration = Duration::from_secs(1);
    let mut backoff = FIRST;
    let mut force_create = false;
    loop {
        if shared.cancel.is_cancelled() {
            return;
        }
        let cfg = shared.cfg();
        let s = StreamSettings {
            conn: cfg.db.clone(),
            slot: cfg.wal.slot.clone(),
            create_slot: cfg.wal.create_slot || force_create,
            compression: cfg.wal.compression,
            partial_interval: cfg.wal.partial_interval,
            status_interval: cfg.wal.status_interval,
            synchronous: cfg.wal.synchronous,
            application_name: cfg.wal.application_name.clone(),
            stop_at: None,
            live: Some(shared.live.clone()),
            // After the slot guard gave the slot up, the WAL before the new
            // slot is what it freed: never ask for it again.
            accept_gap: force_create,
        };
        let child = shared.cancel.child_token();
        shared.state().wal.running = true;
        let started = Instant::now();
        let started_at = Utc::now();
        let stream = crate::jobs::wal::stream::run(&shared.repo, &s, child.clone());
        tokio::pin!(stream);
        let outcome = tokio::select! {
            r = &mut stream => Some(r),
            _ = shared.wal_restart.notified() => {
                // A reload changed the stream's settings: what the stream
                // holds is flushed by its cancellation, then it starts anew.
                child.cancel();
                let _ = stream.await;
                None
            }
            Some(retained) = reset.recv() => {
                child.cancel();
                let _ = stream.await;
                shared.state().wal.running = false;
                slot_guard::reset_slot(&shared, &cfg, retained).await;
                force_create = true;
                None
            }
        };
        shared.state().wal.running = false;
        let Some(result) = outcome else { continue };
        if shared.cancel.is_cancelled() {
            return;
        }
        let message = match result {
            // Only a cancelled stream ends without an error.
            Ok(_) => "the WAL stream ended".to_string(),
            Err(e) => shared.redact(&e.to_string()),
        };
        if started.elapsed() > Duration::from_secs(60) {
            backoff = FIRST;
        }
        // Handled here: the stream is restarted after the backoff.
        tracing::error!("WAL stream failed, restarting in {backoff:?}: {message}");
        {
            let mut st = shared.state();
            st.wal.restarts += 1;
            st.wal.last_error = Some(message.clone());
        }
        shared
            .finish(shared.failure("wal", started_at, "supervisor", message))
            .await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}
