//! The daemon's HTTP server (axum): read-only views of its state and the
//! repository, and token-protected endpoints that start a job now.
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /livez` | 200 `ok` while the process serves requests (for liveness probes: a restart cannot mend what `/healthz` reports) |
//! | `GET /healthz` | 200 `ok` while the tasks run; 503 and the reason otherwise |
//! | `GET /status` | the status document (`status.rs`) |
//! | `GET /backups` | what `pgtide list --json` prints |
//! | `GET /metrics` | Prometheus text exposition format |
//! | `POST /run/backup`, `/run/dump`, `/run/expire`, `/run/drill` | 202 `{"job_id": …}`; 409 while one of that kind runs; 401 without `Authorization: Bearer <token>` or with a wrong one; 403 when no token is configured |
//!
//! `POST /run/dump?database=NAME` runs only the configured dump of that
//! database. Nothing here writes to the repository itself: the jobs do.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{JobKind, Shared};

pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let cancel = shared.cancel.clone();
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/backups", get(backups))
        .route("/metrics", get(metrics))
        .route("/run/{kind}", post(run_now))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
    {
        // Handled here: the other tasks go on; /healthz cannot be reached.
        tracing::error!("the HTTP server stopped: {e}");
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let cfg = s.cfg();
    let st = s.state();
    let mut problems = Vec::new();
    if cfg.wal.stream && !st.wal.running {
        problems.push(format!(
            "the WAL stream is not running{}",
            st.wal
                .last_error
                .as_ref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        ));
    }
    if st.slot.over_warn {
        problems.push("the replication slot retains more WAL than wal.slot_warn".into());
    }
    if s.cancel.is_cancelled() {
        problems.push("the daemon is stopping".into());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("; ")),
        )
            .into_response()
    }
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    Json(super::status::live(&s)).into_response()
}

async fn backups(State(s): State<Arc<Shared>>) -> Response {
    match crate::jobs::inspect::list(&s.repo).await {
        Ok(l) => Json(l).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", s.redact(&e.to_string())),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    s.refresh_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct RunQuery {
    database: Option<String>,
}

async fn run_now(
    State(s): State<Arc<Shared>>,
    Path(kind): Path<String>,
    Query(q): Query<RunQuery>,
    headers: HeaderMap,
) -> Response {
    let cfg = s.cfg();
    let Some(token) = cfg.http.token.as_deref() else {
        return (
            StatusCode::FORBIDDEN,
            "run endpoints are off: configure http.token_file or PGTIDE_HTTP_TOKEN\n",
        )
            .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response();
    }
    let job = match kind.as_str() {
        "backup" => JobKind::Backup,
        "expire" => JobKind::Expire,
        "drill" => JobKind::Drill,
        "dump" => match &q.database {
            None => JobKind::Dump(None),
            Some(db) => match cfg.dumps.iter().position(|d| &d.database == db) {
                Some(i) => JobKind::Dump(Some(i)),
                None => {
                    return (
                        StatusCode::NOT_FOUND,
                        format!("no [[dump]] of database {db} is configured\n"),
                    )
                        .into_response()
                }
            },
        },
        other => {
            return (
                StatusCode::NOT_FOUND,
                format!("unknown job kind {other:?}: use backup, dump, expire or drill\n"),
            )
                .into_response()
        }
    };
    if job == JobKind::Dump(None) && cfg.dumps.is_empty() {
        return (StatusCode::NOT_FOUND, "no [[dump]] is configured\n").into_response();
    }
    match s.request(job, "http") {
        Ok(job_id) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "job_id": job_id })),
        )
            .into_response(),
        Err(running) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": "a job of this kind is already running",
                "running": running,
            })),
        )
            .into_response(),
    }
}

/// Compare without an early exit, so the time taken does not tell how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }
}
