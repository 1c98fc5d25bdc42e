//! The streaming writer: one Put Blob for a small object, otherwise staged
//! blocks (Put Block, each with its `Content-MD5`), at most
//! `BLOCKS_IN_FLIGHT` in flight while the next fills, committed by Put Block
//! List; the block size grows so that any object stays under 50,000 blocks.
//! Uncommitted blocks are invisible and expire by themselves: an aborted or
//! dropped writer leaves nothing readable or listed. With a retention, the
//! commit (Put Blob or Put Block List) carries the immutability policy,
//! counted from the commit.

use super::*;

/// Size of block `n` (0-based) for a writer whose base size is `base`.
pub(super) fn block_size_for(base: usize, n: u32) -> usize {
    let doublings = (n / GROW_EVERY_BLOCKS).min(32);
    (base as u64)
        .saturating_mul(1u64 << doublings)
        .min(MAX_BLOCK_SIZE as u64) as usize
}

type BlockTask = JoinHandle<Result<(), StorageError>>;

pub(super) struct AzureWriter {
    az: Arc<Inner>,
    key: String,
    /// Immutability policy the blob gets (from its commit).
    retention: Option<Retention>,
    /// The block being filled; never longer than the current block size.
    buf: BytesMut,
    /// Ids of the blocks sent, in order.
    blocks: Vec<String>,
    /// Tells this writer's blocks from another writer's of the same blob.
    nonce: u64,
    in_flight: VecDeque<BlockTask>,
    /// Bytes accepted by `write`.
    size: u64,
    failed: bool,
    closed: bool,
}

impl AzureWriter {
    pub(super) fn new(az: Arc<Inner>, key: &str, retention: Option<Retention>) -> AzureWriter {
        AzureWriter {
            az,
            key: key.to_string(),
            retention,
            buf: BytesMut::new(),
            blocks: Vec::new(),
            nonce: fastrand::u64(..),
            in_flight: VecDeque::new(),
            size: 0,
            failed: false,
            closed: false,
        }
    }

    fn current_block_size(&self) -> usize {
        block_size_for(self.az.block_size, self.blocks.len() as u32)
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

    async fn join(&self, task: BlockTask) -> Result<(), StorageError> {
        task.await.map_err(|e| {
            service(
                "upload block of",
                &self.key,
                format!("upload task failed: {e}"),
                false,
            )
        })?
    }

    /// Stage `body` as the next block, first waiting for the oldest block
    /// in flight when `BLOCKS_IN_FLIGHT` are already uploading.
    async fn send_block(&mut self, body: Bytes) -> Result<(), StorageError> {
        if self.blocks.len() as u32 >= MAX_BLOCKS {
            return Err(service(
                "upload",
                &self.key,
                format!("object needs more than {MAX_BLOCKS} blocks"),
                false,
            ));
        }
        while self.in_flight.len() >= BLOCKS_IN_FLIGHT {
            let task = self.in_flight.pop_front().expect("len checked");
            self.join(task).await?;
        }
        // Every id of a blob must have the same length: fixed-width digits.
        let id = cloud::b64(format!("{:016x}-{:06}", self.nonce, self.blocks.len()).as_bytes());
        self.blocks.push(id.clone());
        let az = self.az.clone();
        let key = self.key.clone();
        self.in_flight.push_back(tokio::spawn(async move {
            let md5 = cloud::md5_b64(body.clone()).await;
            let mut url = az.blob_url(&key);
            url.query_pairs_mut()
                .append_pair("comp", "block")
                .append_pair("blockid", &id);
            let resp = az
                .send(
                    "upload block of",
                    &key,
                    http::Method::PUT,
                    &url,
                    &[("content-md5", md5)],
                    body,
                )
                .await?;
            if !resp.ok() {
                return Err(az.error("upload block of", &key, &resp));
            }
            Ok(())
        }));
        Ok(())
    }

    async fn write_inner(&mut self, mut data: Bytes) -> Result<(), StorageError> {
        while !data.is_empty() {
            let block = self.current_block_size();
            if self.buf.is_empty() && data.len() >= block {
                // A whole block in hand: send it without copying.
                let body = data.split_to(block);
                self.size += block as u64;
                self.send_block(body).await?;
                continue;
            }
            if self.buf.is_empty() {
                self.buf.reserve(block);
            }
            let take = (block - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            self.size += take as u64;
            if self.buf.len() == block {
                let body = std::mem::take(&mut self.buf).freeze();
                self.send_block(body).await?;
            }
        }
        Ok(())
    }

    async fn finish_inner(&mut self) -> Result<u64, StorageError> {
        if self.blocks.is_empty() {
            let body = std::mem::take(&mut self.buf).freeze();
            self.az
                .put_blob(&self.key, body, false, self.retention)
                .await?;
            return Ok(self.size);
        }
        if !self.buf.is_empty() {
            let body = std::mem::take(&mut self.buf).freeze();
            self.send_block(body).await?;
        }
        while let Some(task) = self.in_flight.pop_front() {
            self.join(task).await?;
        }
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in &self.blocks {
            xml.push_str("<Latest>");
            xml.push_str(id);
            xml.push_str("</Latest>");
        }
        xml.push_str("</BlockList>");
        let xml = Bytes::from(xml);
        let md5 = cloud::md5_b64(xml.clone()).await;
        let mut url = self.az.blob_url(&self.key);
        url.query_pairs_mut().append_pair("comp", "blocklist");
        let mut headers = vec![
            ("content-md5", md5),
            ("content-type", "application/xml".to_string()),
            (
                "x-ms-blob-content-type",
                "application/octet-stream".to_string(),
            ),
        ];
        let committed_at = chrono::Utc::now();
        if let Some(r) = &self.retention {
            headers.extend(retention::policy_headers(r, committed_at));
        }
        let resp = self
            .az
            .send(
                "complete upload of",
                &self.key,
                http::Method::PUT,
                &url,
                &headers,
                xml,
            )
            .await?;
        if !resp.ok() {
            let op = "complete upload of";
            return Err(match self.retention {
                Some(_) => self.az.policy_write_error(op, &self.key, &resp),
                None => self.az.error(op, &self.key, &resp),
            });
        }
        self.closed = true;
        // Prove the object is there and whole before saying so.
        let head = self.az.stat(&self.key, None).await?;
        let stored = Inner::size_of(&self.key, &head)?;
        if stored != self.size {
            let _ = self.az.delete_one(&self.key).await;
            return Err(service(
                "complete upload of",
                &self.key,
                format!(
                    "stored object has {stored} bytes after {} blocks, {} were written",
                    self.blocks.len(),
                    self.size
                ),
                true,
            ));
        }
        if let Some(r) = self.retention {
            // A store that took the headers but kept no policy gets it
            // set explicitly (or says it cannot keep one).
            let want = r.until(committed_at);
            let (has, _) = retention::policy_in(&head);
            if has.is_none_or(|t| t < want) {
                let version = head.header("x-ms-version-id");
                if let Err(e) = self.az.set_policy(&self.key, version, r.mode, want).await {
                    // Not left behind without its policy, where a re-run
                    // would take it for done.
                    let _ = self.az.delete_one(&self.key).await;
                    return Err(e);
                }
            }
        }
        Ok(self.size)
    }

    fn cleanup(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        self.buf = BytesMut::new();
        self.closed = true;
    }
}

impl Drop for AzureWriter {
    fn drop(&mut self) {
        // Staged blocks are never visible; the service discards them.
        for task in self.in_flight.drain(..) {
            task.abort();
        }
    }
}

#[async_trait]
impl ObjectWriter for AzureWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.check_usable("write")?;
        if let Err(e) = self.write_inner(data).await {
            self.failed = true;
            self.cleanup();
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
                self.cleanup();
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.cleanup();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_grow_to_stay_under_the_limit() {
        let base = DEFAULT_BLOCK_SIZE;
        assert_eq!(block_size_for(base, 0), base);
        assert_eq!(block_size_for(base, GROW_EVERY_BLOCKS - 1), base);
        assert_eq!(block_size_for(base, GROW_EVERY_BLOCKS), 2 * base);
        let total: u64 = (0..MAX_BLOCKS)
            .map(|n| block_size_for(base, n) as u64)
            .sum();
        // Far beyond any pack or WAL object (38 TiB with 8 MiB blocks),
        // while objects up to 39 GiB keep 8 MiB blocks.
        assert!(total > 32 * (1u64 << 40), "{total}");
        assert_eq!(
            (0..GROW_EVERY_BLOCKS)
                .map(|n| block_size_for(base, n) as u64)
                .sum::<u64>(),
            39 * (1u64 << 30) + 64 * (1u64 << 20)
        );
        assert_eq!(block_size_for(MAX_BLOCK_SIZE, 49_999), MAX_BLOCK_SIZE);
    }
}
