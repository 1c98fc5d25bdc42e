//! The streaming writer: one multipart upload for a small object, otherwise
//! a resumable upload session. Chunks (multiples of 256 KiB) must arrive in
//! order, so one chunk uploads while the next fills: a writer holds at most
//! 2 × chunk size. After a failed request the writer asks the session how
//! much it holds and sends the rest. The last request carries the CRC32C of
//! the whole object; an aborted or dropped writer cancels the session, and
//! nothing is visible before the last request succeeds.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::*;

/// Uploads a chunk; returns the chunk's CRC32C.
type ChunkTask = JoinHandle<Result<u32, StorageError>>;

pub(super) struct GcsWriter {
    g: Arc<Inner>,
    key: String,
    /// The chunk being filled; never longer than the chunk size.
    buf: BytesMut,
    /// The session URI, once the first chunk is sent.
    session: Option<String>,
    /// Bytes handed to chunk uploads so far (the offset of the next chunk).
    sent: u64,
    /// CRC32C of the bytes of finished chunk uploads, in order, and their count.
    crc: u32,
    acked: u64,
    /// The chunk uploading, and its length.
    in_flight: Option<(ChunkTask, u64)>,
    /// Bytes accepted by `write`.
    size: u64,
    failed: bool,
    closed: bool,
    /// Object retention the object gets (from its completion).
    retention: Option<Retention>,
}

/// Where a resumable upload stands after a request.
enum Standing {
    /// The session holds this many bytes.
    Holds(u64),
    /// The object is complete: the service's answer.
    Done(Response),
}

impl GcsWriter {
    pub(super) fn new(g: Arc<Inner>, key: &str, retention: Option<Retention>) -> GcsWriter {
        GcsWriter {
            g,
            key: key.to_string(),
            buf: BytesMut::new(),
            session: None,
            sent: 0,
            crc: 0,
            acked: 0,
            in_flight: None,
            size: 0,
            failed: false,
            closed: false,
            retention,
        }
    }

    fn check_usable(&self, op: &'static str) -> Result<(), StorageError> {
        if self.failed || self.closed {
            return Err(service(
                op,
                &self.key,
                "writer already failed or closed",
                false,
            ));
        }
        Ok(())
    }

    async fn start_session(&mut self) -> Result<String, StorageError> {
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        let g = &self.g;
        // The retention counts from the session's start here; `finish`
        // extends it to a full period from the completion.
        let meta = g.new_object(&self.key, self.retention);
        let resp = g
            .send(
                "start upload of",
                &self.key,
                http::Method::POST,
                &g.upload_url("resumable"),
                &[
                    (
                        "content-type",
                        "application/json; charset=UTF-8".to_string(),
                    ),
                    (
                        "x-upload-content-type",
                        "application/octet-stream".to_string(),
                    ),
                ],
                HttpRequestBody::from(Bytes::from(meta.to_string())),
            )
            .await?;
        if !resp.ok() {
            return Err(g.error("start upload of", &self.key, &resp));
        }
        let session = resp
            .header("location")
            .ok_or_else(|| {
                service(
                    "start upload of",
                    &self.key,
                    "the store sent no session URI",
                    false,
                )
            })?
            .to_string();
        self.session = Some(session.clone());
        Ok(session)
    }

    /// Wait for the chunk in flight and add its CRC32C.
    async fn join(&mut self) -> Result<(), StorageError> {
        let Some((task, len)) = self.in_flight.take() else {
            return Ok(());
        };
        let chunk_crc = task.await.map_err(|e| {
            service(
                "upload part of",
                &self.key,
                format!("upload task failed: {e}"),
                false,
            )
        })??;
        self.crc = if self.acked == 0 {
            chunk_crc
        } else {
            cloud::crc32c_combine(self.crc, chunk_crc, len)
        };
        self.acked += len;
        Ok(())
    }

    async fn send_chunk(&mut self, body: Bytes) -> Result<(), StorageError> {
        let session = self.start_session().await?;
        self.join().await?;
        let (g, key, start) = (self.g.clone(), self.key.clone(), self.sent);
        let len = body.len() as u64;
        self.sent += len;
        self.in_flight = Some((
            tokio::spawn(async move {
                let crc = cloud::crc32c(body.clone()).await;
                match upload(&g, &key, &session, start, body, None).await? {
                    Standing::Holds(_) => Ok(crc),
                    Standing::Done(_) => Err(service(
                        "upload part of",
                        &key,
                        "the store finished the object before its last part",
                        false,
                    )),
                }
            }),
            len,
        ));
        Ok(())
    }

    async fn write_inner(&mut self, mut data: Bytes) -> Result<(), StorageError> {
        let chunk = self.g.chunk_size;
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= chunk {
                let body = data.split_to(chunk);
                self.size += chunk as u64;
                self.send_chunk(body).await?;
                continue;
            }
            if self.buf.is_empty() {
                self.buf.reserve(chunk);
            }
            let take = (chunk - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            self.size += take as u64;
            if self.buf.len() == chunk {
                let body = std::mem::take(&mut self.buf).freeze();
                self.send_chunk(body).await?;
            }
        }
        Ok(())
    }

    async fn finish_inner(&mut self) -> Result<u64, StorageError> {
        let Some(session) = self.session.clone() else {
            let body = std::mem::take(&mut self.buf).freeze();
            self.g
                .put_object(&self.key, body, false, self.retention)
                .await?;
            return Ok(self.size);
        };
        self.join().await?;
        let last = std::mem::take(&mut self.buf).freeze();
        let last_len = last.len() as u64;
        let last_crc = cloud::crc32c(last.clone()).await;
        let crc = if last_len == 0 {
            self.crc
        } else {
            cloud::crc32c_combine(self.crc, last_crc, last_len)
        };
        let total = self.size;
        let resp = match upload(
            &self.g,
            &self.key,
            &session,
            self.sent,
            last,
            Some((total, crc)),
        )
        .await?
        {
            Standing::Done(r) => r,
            Standing::Holds(n) => {
                return Err(service(
                    "complete upload of",
                    &self.key,
                    format!("the store holds {n} of {total} bytes and did not finish the object"),
                    true,
                ))
            }
        };
        let completed_at = chrono::Utc::now();
        self.session = None;
        self.closed = true;
        let stored = self
            .g
            .check_uploaded("complete upload of", &self.key, &resp, total, crc)?;
        if let Some(r) = self.retention {
            let want = r.until(completed_at);
            let has = stored.retention.as_ref().and_then(|r| r.until());
            if has.is_none_or(|t| t < want) {
                let generation = stored.generation.as_deref().ok_or_else(|| {
                    service(
                        "complete upload of",
                        &self.key,
                        "the store answered no generation for the object",
                        false,
                    )
                })?;
                self.g
                    .extend_retention(&self.key, generation, r.mode, want)
                    .await?;
            }
        }
        Ok(total)
    }

    /// Stop the chunk in flight and cancel the session.
    async fn cleanup(&mut self) {
        if let Some((task, _)) = self.in_flight.take() {
            task.abort();
        }
        self.buf = BytesMut::new();
        self.closed = true;
        if let Some(s) = self.session.take() {
            cancel(&self.g, &self.key, &s).await;
        }
    }
}

/// Cancel a session (the service answers 499); best effort: an abandoned
/// session expires after a week and was never visible.
async fn cancel(g: &Inner, key: &str, session: &str) {
    let r = g
        .send(
            "cancel upload of",
            key,
            http::Method::DELETE,
            session,
            &[],
            HttpRequestBody::empty(),
        )
        .await;
    if let Err(e) = r {
        tracing::debug!(key, error = %e, "could not cancel a resumable upload");
    }
}

/// `Range: bytes=0-N` of a 308 answer: the session holds N + 1 bytes.
fn held(resp: &Response) -> u64 {
    resp.header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(_, end)| end.parse::<u64>().ok())
        .map_or(0, |end| end + 1)
}

/// Send `body`, which starts at byte `start` of the object, into the
/// session; with `last = (total, crc32c)` it is the last piece and carries
/// the whole object's CRC32C. After a failure, asks the session how much it
/// holds and sends the rest, up to `cloud::MAX_ATTEMPTS` times.
async fn upload(
    g: &Inner,
    key: &str,
    session: &str,
    start: u64,
    body: Bytes,
    last: Option<(u64, u32)>,
) -> Result<Standing, StorageError> {
    let op = if last.is_some() {
        "complete upload of"
    } else {
        "upload part of"
    };
    let end = start + body.len() as u64;
    let total = last.map_or("*".to_string(), |(t, _)| t.to_string());
    let mut held_now = start;
    let mut attempt = 1;
    let mut delay = Duration::from_millis(200);
    loop {
        let piece = body.slice((held_now.saturating_sub(start)) as usize..);
        let range = if piece.is_empty() {
            format!("bytes */{total}")
        } else {
            format!("bytes {held_now}-{}/{total}", end - 1)
        };
        let mut headers = vec![("content-range", range)];
        if let Some((_, crc)) = last {
            headers.push(("x-goog-hash", format!("crc32c={}", cloud::crc32c_b64(crc))));
        }
        let req = Inner::request(
            None,
            &http::Method::PUT,
            session,
            &headers,
            HttpRequestBody::from(piece),
        )
        .map_err(|t| transport(op, key, t))?;
        let failure = match g.http.send(req).await {
            Ok(resp) if resp.ok() => return Ok(Standing::Done(resp)),
            Ok(resp) if resp.status == 308 => {
                held_now = held(&resp);
                if held_now < start {
                    return Err(service(
                        op,
                        key,
                        format!(
                            "the store holds {held_now} bytes, {start} were acknowledged before"
                        ),
                        false,
                    ));
                }
                if last.is_none() && held_now >= end {
                    return Ok(Standing::Holds(held_now));
                }
                // Fewer bytes than sent: send the rest at once.
                continue;
            }
            Ok(resp) if resp.status == 404 || resp.status == 410 => {
                return Err(service(
                    op,
                    key,
                    format!(
                        "the upload session has expired or was cancelled (HTTP {})",
                        resp.status
                    ),
                    false,
                ))
            }
            Ok(resp) if !resp.retryable() => return Err(g.error(op, key, &resp)),
            Ok(resp) => g.error(op, key, &resp),
            Err(t) if !t.retryable => return Err(transport(op, key, t)),
            Err(t) => transport(op, key, t),
        };
        if attempt >= cloud::MAX_ATTEMPTS {
            return Err(failure);
        }
        attempt += 1;
        crate::storage::RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
        // Where does the session stand?
        let req = Inner::request(
            None,
            &http::Method::PUT,
            session,
            &[("content-range", format!("bytes */{total}"))],
            HttpRequestBody::empty(),
        )
        .map_err(|t| transport(op, key, t))?;
        match g.http.send(req).await {
            Ok(resp) if resp.ok() => return Ok(Standing::Done(resp)),
            Ok(resp) if resp.status == 308 => held_now = held(&resp).max(start),
            // Asked again on the next round.
            _ => {}
        }
    }
}

impl Drop for GcsWriter {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Some((task, _)) = self.in_flight.take() {
            task.abort();
        }
        if let (Some(s), Ok(rt)) = (self.session.take(), tokio::runtime::Handle::try_current()) {
            let g = self.g.clone();
            let key = self.key.clone();
            rt.spawn(async move { cancel(&g, &key, &s).await });
        }
    }
}

#[async_trait]
impl ObjectWriter for GcsWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.check_usable("write")?;
        if let Err(e) = self.write_inner(data).await {
            self.failed = true;
            self.cleanup().await;
            return Err(e);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        self.check_usable("finish")?;
        match self.finish_inner().await {
            Ok(n) => {
                self.closed = true;
                Ok(n)
            }
            Err(e) => {
                self.failed = true;
                self.cleanup().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        if !self.closed {
            self.cleanup().await;
        }
        Ok(())
    }
}
