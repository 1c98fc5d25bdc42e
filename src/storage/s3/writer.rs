//! The streaming writer: one PUT for a small object, otherwise a multipart
//! upload with a CRC32 per part, at most `PARTS_IN_FLIGHT` parts in flight
//! while the next fills, the part size growing so that any object stays
//! under 10,000 parts.

use super::*;

/// Size of part `part_number` (1-based) for a writer whose base size is `base`.
pub(super) fn part_size_for(base: usize, part_number: i32) -> usize {
    let doublings = ((part_number.max(1) - 1) / GROW_EVERY_PARTS).min(32) as u32;
    (base as u64)
        .saturating_mul(1u64 << doublings)
        .min(MAX_PART_SIZE as u64) as usize
}

type PartTask = JoinHandle<Result<CompletedPart, StorageError>>;

/// Buffers one part at a time. Below the part size at `finish` the object goes
/// up in one PUT; otherwise a multipart upload is started with the first full
/// part, at most `PARTS_IN_FLIGHT` parts upload while the next one fills, and
/// `finish` completes the upload and checks the object's size.
pub(super) struct S3Writer {
    pub(super) s3: Arc<Inner>,
    /// Object Lock retention the object gets (from its completion).
    pub(super) retention: Option<Retention>,
    pub(super) key: String,
    /// The part being filled; never longer than the current part size.
    pub(super) buf: BytesMut,
    /// Set once the first part is sent.
    pub(super) upload_id: Option<String>,
    /// Number of the part being filled (1-based).
    pub(super) next_part: i32,
    pub(super) in_flight: VecDeque<PartTask>,
    pub(super) done: Vec<CompletedPart>,
    /// Bytes accepted by `write`.
    pub(super) size: u64,
    /// A call failed and the upload was aborted; every later call fails.
    pub(super) failed: bool,
    /// Completed or aborted: `Drop` has nothing to clean up.
    pub(super) closed: bool,
}

impl S3Writer {
    pub(super) fn current_part_size(&self) -> usize {
        part_size_for(self.s3.part_size, self.next_part)
    }

    pub(super) fn check_usable(&self, op: &'static str) -> Result<(), StorageError> {
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

    pub(super) async fn join_part(&self, task: PartTask) -> Result<CompletedPart, StorageError> {
        task.await.map_err(|e| {
            service(
                "upload part of",
                &self.key,
                format!("upload task failed: {e}"),
                false,
            )
        })?
    }

    /// Upload `body` as the next part, first waiting for the oldest part in
    /// flight when `PARTS_IN_FLIGHT` are already uploading.
    pub(super) async fn send_part(&mut self, body: Bytes) -> Result<(), StorageError> {
        if self.next_part > MAX_PARTS {
            return Err(service(
                "upload",
                &self.key,
                format!("object needs more than {MAX_PARTS} parts"),
                false,
            ));
        }
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let mut req = self
                    .s3
                    .client
                    .create_multipart_upload()
                    .bucket(&self.s3.bucket)
                    .key(self.s3.full_key(&self.key))
                    .checksum_algorithm(ChecksumAlgorithm::Crc32);
                if let Some(r) = self.retention {
                    // Protects the object from its completion on; `finish`
                    // extends it to a full period after the completion.
                    req = req
                        .object_lock_mode(lock_mode(r.mode))
                        .object_lock_retain_until_date(sdk_time(r.until(chrono::Utc::now())));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| self.s3.error("start upload of", &self.key, failure(e)))?;
                let id = resp
                    .upload_id()
                    .ok_or_else(|| {
                        service(
                            "start upload of",
                            &self.key,
                            "the store sent no upload id",
                            false,
                        )
                    })?
                    .to_string();
                self.upload_id = Some(id.clone());
                id
            }
        };
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            let task = self.in_flight.pop_front().expect("len checked");
            let part = self.join_part(task).await?;
            self.done.push(part);
        }
        let s3 = self.s3.clone();
        let key = self.key.clone();
        let number = self.next_part;
        self.in_flight.push_back(tokio::spawn(async move {
            let crc = crc32_b64(body.clone()).await;
            let resp = s3
                .client
                .upload_part()
                .bucket(&s3.bucket)
                .key(s3.full_key(&key))
                .upload_id(upload_id)
                .part_number(number)
                .content_length(body.len() as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .checksum_crc32(&crc)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| s3.error("upload part of", &key, failure(e)))?;
            let etag = resp.e_tag().ok_or_else(|| {
                service(
                    "upload part of",
                    &key,
                    format!("the store sent no ETag for part {number}"),
                    true,
                )
            })?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .e_tag(etag)
                .checksum_crc32(crc)
                .build())
        }));
        self.next_part += 1;
        Ok(())
    }

    pub(super) async fn write_inner(&mut self, mut data: Bytes) -> Result<(), StorageError> {
        while !data.is_empty() {
            let part = self.current_part_size();
            if self.buf.is_empty() && data.len() >= part {
                // A whole part in hand: send it without copying.
                let body = data.split_to(part);
                self.size += part as u64;
                self.send_part(body).await?;
                continue;
            }
            if self.buf.is_empty() {
                self.buf.reserve(part);
            }
            let take = (part - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            self.size += take as u64;
            if self.buf.len() == part {
                let body = std::mem::take(&mut self.buf).freeze();
                self.send_part(body).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn finish_inner(&mut self) -> Result<u64, StorageError> {
        let Some(upload_id) = self.upload_id.clone() else {
            let body = std::mem::take(&mut self.buf).freeze();
            self.s3
                .put_object("upload", &self.key, body, false, self.retention)
                .await?;
            return Ok(self.size);
        };
        if !self.buf.is_empty() {
            let body = std::mem::take(&mut self.buf).freeze();
            self.send_part(body).await?;
        }
        while let Some(task) = self.in_flight.pop_front() {
            let part = self.join_part(task).await?;
            self.done.push(part);
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let count = parts.len();
        let full_key = self.s3.full_key(&self.key);
        let completed = self
            .s3
            .client
            .complete_multipart_upload()
            .bucket(&self.s3.bucket)
            .key(&full_key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match completed {
            Ok(resp) if resp.e_tag().is_some() => {}
            Ok(_) => {
                return Err(service(
                    "complete upload of",
                    &self.key,
                    format!("the store did not confirm the upload of {count} parts"),
                    true,
                ))
            }
            Err(e) if confirmed_despite_parse_error(&e) => {}
            Err(e) => {
                let f = failure(e);
                // A retried completion may find its own earlier success.
                if f.code.as_deref() != Some("NoSuchUpload") {
                    return Err(self.s3.error("complete upload of", &self.key, f));
                }
            }
        }
        self.upload_id = None;
        self.closed = true;
        let completed_at = chrono::Utc::now();
        // Prove the object is there and whole before saying so.
        let head = self
            .s3
            .client
            .head_object()
            .bucket(&self.s3.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| self.s3.error("check upload of", &self.key, failure(e)))?;
        let stored = head.content_length().unwrap_or(-1);
        if stored != self.size as i64 {
            // That version (in a versioned bucket, a delete without it would
            // only hide it); one under retention stays until its date.
            let _ = self
                .s3
                .client
                .delete_object()
                .bucket(&self.s3.bucket)
                .key(&full_key)
                .set_version_id(head.version_id().map(str::to_string))
                .send()
                .await;
            return Err(service(
                "complete upload of",
                &self.key,
                format!(
                    "stored object has {stored} bytes after {count} parts, {} were written",
                    self.size
                ),
                true,
            ));
        }
        if let Some(r) = self.retention {
            // The date sent with CreateMultipartUpload counted from the
            // upload's start, and some stores ignore it there: make it a
            // full period from the completion (extending is always allowed).
            let want = r.until(completed_at);
            let has = head
                .object_lock_retain_until_date()
                .and_then(chrono_time)
                .filter(|_| head.object_lock_mode().is_some());
            if has.is_none_or(|t| t < want) {
                self.s3
                    .put_retention(&self.key, head.version_id(), r.mode, want)
                    .await?;
            }
        }
        Ok(self.size)
    }

    /// Stop part uploads and abort the multipart upload.
    pub(super) async fn cleanup(&mut self) -> Result<(), StorageError> {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        self.buf = BytesMut::new();
        self.closed = true;
        match self.upload_id.take() {
            Some(id) => self.s3.abort_upload(&self.key, &id).await,
            None => Ok(()),
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        // Best effort: nothing is visible anyway; this frees the stored parts.
        if let (Some(id), Ok(rt)) = (self.upload_id.take(), tokio::runtime::Handle::try_current()) {
            let s3 = self.s3.clone();
            let key = self.key.clone();
            rt.spawn(async move {
                if let Err(e) = s3.abort_upload(&key, &id).await {
                    // The upload's parts stay until a lifecycle rule removes them.
                    tracing::warn!(key = %key, error = %e, "could not abort dropped multipart upload");
                }
            });
        }
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.check_usable("write")?;
        if let Err(e) = self.write_inner(data).await {
            self.failed = true;
            let _ = self.cleanup().await;
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
                let _ = self.cleanup().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        if self.closed {
            return Ok(());
        }
        self.cleanup().await
    }
}
