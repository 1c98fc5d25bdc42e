//! Outgoing HTTP: the failure (and, when asked, success) webhook, and the
//! client `pgtide status` uses to ask a running daemon. hyper's client with
//! rustls (the TLS stack the S3 driver already uses) and the system's root
//! certificates.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::repo::runs::RunRecord;

/// What the webhook receives (JSON, POST).
#[derive(Debug, Serialize)]
struct Event<'a> {
    /// `pgtide.run.failed` or `pgtide.run.succeeded`.
    event: &'static str,
    #[serde(flatten)]
    run: &'a RunRecord,
}

/// POST the run to the webhook; failures are logged, never fatal.
pub async fn send(url: &str, run: &RunRecord) {
    let event = Event {
        event: if run.ok {
            "pgtide.run.succeeded"
        } else {
            "pgtide.run.failed"
        },
        run,
    };
    let body = serde_json::to_vec(&event).expect("events serialize");
    match request(
        "POST",
        url,
        Some(body.into()),
        None,
        Duration::from_secs(10),
    )
    .await
    {
        Ok((status, _)) if (200..300).contains(&status) => {}
        // Handled here: a notification is best effort. The URL is not
        // logged (it often holds a token).
        Ok((status, _)) => tracing::warn!("the notification webhook answered HTTP {status}"),
        Err(e) => tracing::warn!("could not send the notification webhook: {e}"),
    }
}

/// One HTTP request; returns the status and the body (at most 16 MiB).
pub async fn request(
    method: &str,
    url: &str,
    body: Option<Bytes>,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("user-agent", concat!("pgtide/", env!("CARGO_PKG_VERSION")));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| format!("invalid request: {e}"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            // The error's source chain says what failed (refused, TLS, …).
            let mut m = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                m = format!("{m}: {s}");
                src = s.source();
            }
            m
        })?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), 16 << 20)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
