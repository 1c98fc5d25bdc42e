//! Physical streaming (`START_REPLICATION … PHYSICAL`): XLogData and
//! keepalives in, standby status updates out, the end of a timeline.

use super::*;

impl WireClient {
    /// `START_REPLICATION [SLOT slot] PHYSICAL start [TIMELINE timeline]`
    /// (timeline 0: the server's current one). On success the connection
    /// streams: call [`recv`](Self::recv) and
    /// [`send_status`](Self::send_status).
    pub async fn start_physical(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: u32,
    ) -> Result<(), WireError> {
        let mut sql = String::from("START_REPLICATION");
        if let Some(slot) = slot {
            check_slot_name(slot)?;
            sql.push_str(" SLOT ");
            sql.push_str(slot);
        }
        sql.push_str(&format!(" PHYSICAL {start}"));
        if timeline != 0 {
            sql.push_str(&format!(" TIMELINE {timeline}"));
        }
        self.ready("start streaming")?;
        frontend::query(&sql, &mut self.wbuf).map_err(|e| self.settings_error(e))?;
        self.send().await?;
        let mut error = None;
        let mut next = None;
        loop {
            match self.next_message().await? {
                BackendMessage::CopyBothResponse if error.is_none() => {
                    self.mode = Mode::Streaming { stopping: false };
                    return Ok(());
                }
                // Starting exactly at the end of a historic timeline: no
                // copy, only the next timeline.
                BackendMessage::RowDescription(_) | BackendMessage::CommandComplete(_) => {}
                BackendMessage::DataRow(row) => next = Some(next_timeline(&row)?),
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::NoticeResponse(n) => self.notice(&n),
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.insert(name, value);
                }
                BackendMessage::ReadyForQuery { .. } => break,
                other => return Err(self.unexpected(&other.name(), "starting to stream")),
            }
        }
        if let Some(e) = error {
            return Err(self.command_error(e, slot));
        }
        match next {
            Some((next_tli, next_tli_start)) => {
                self.pending = Some(ReplEvent::EndOfTimeline {
                    next_tli,
                    next_tli_start,
                });
                Ok(())
            }
            None => Err(self.unexpected(
                "end of START_REPLICATION without a copy",
                "starting to stream",
            )),
        }
    }

    /// The next message of the stream. After the server ends a timeline this
    /// answers CopyDone, reads the next timeline and returns
    /// [`ReplEvent::EndOfTimeline`]; the client is then back in command mode.
    pub async fn recv(&mut self) -> Result<ReplEvent, WireError> {
        loop {
            if let Some(event) = self.stream_step().await? {
                return Ok(event);
            }
            self.fill().await?;
        }
    }

    /// [`recv`](Self::recv), or `Ok(None)` when nothing arrived within `d`
    /// (so the caller can send a periodic status update). Cancel-safe: a
    /// timeout never leaves half a message consumed.
    pub async fn recv_timeout(&mut self, d: Duration) -> Result<Option<ReplEvent>, WireError> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Some(event) = self.stream_step().await? {
                return Ok(Some(event));
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            }
        }
    }

    /// Decodes what is buffered; `Ok(None)` = read more.
    pub(super) async fn stream_step(&mut self) -> Result<Option<ReplEvent>, WireError> {
        if let Some(event) = self.pending.take() {
            return Ok(Some(event));
        }
        if !matches!(self.mode, Mode::Streaming { .. }) {
            return Err(self.busy("receive WAL"));
        }
        loop {
            let msg = match messages::decode(&mut self.rbuf) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.protocol(e)),
            };
            match msg {
                BackendMessage::CopyData(payload) => {
                    if matches!(self.mode, Mode::Streaming { stopping: true }) {
                        continue;
                    }
                    return match walproto::decode(&payload) {
                        Ok(WalMessage::XLogData {
                            start, end, data, ..
                        }) => Ok(Some(ReplEvent::XLogData { start, end, data })),
                        Ok(WalMessage::Keepalive {
                            end,
                            reply_requested,
                            ..
                        }) => Ok(Some(ReplEvent::Keepalive {
                            end,
                            reply_requested,
                        })),
                        Err(e) => Err(self.protocol(e)),
                    };
                }
                BackendMessage::CopyDone => return self.end_of_copy().await.map(Some),
                BackendMessage::ErrorResponse(e) => {
                    self.drain_to_ready().await?;
                    self.mode = Mode::Idle;
                    return Err(self.command_error(e, None));
                }
                BackendMessage::CommandComplete(_) => {
                    // A walsender that shuts down ends the command without
                    // CopyDone and exits.
                    self.mode = Mode::Broken;
                    return Err(WireError::ConnectionLost {
                        server: self.server.clone(),
                        reason: "the server ended streaming because it is shutting down".to_owned(),
                    });
                }
                BackendMessage::NoticeResponse(n) => self.notice(&n),
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.insert(name, value);
                }
                other => return Err(self.unexpected(&other.name(), "streaming WAL")),
            }
        }
    }

    /// The server sent CopyDone: answer it, then read the next timeline.
    pub(super) async fn end_of_copy(&mut self) -> Result<ReplEvent, WireError> {
        if matches!(self.mode, Mode::Streaming { stopping: false }) {
            frontend::copy_done(&mut self.wbuf);
            self.send().await?;
        }
        let mut next = None;
        let mut error = None;
        loop {
            match self.next_message().await? {
                BackendMessage::DataRow(row) => next = Some(next_timeline(&row)?),
                BackendMessage::RowDescription(_)
                | BackendMessage::CommandComplete(_)
                | BackendMessage::CopyData(_) => {}
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::NoticeResponse(n) => self.notice(&n),
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.insert(name, value);
                }
                BackendMessage::ReadyForQuery { .. } => break,
                other => return Err(self.unexpected(&other.name(), "ending the stream")),
            }
        }
        self.mode = Mode::Idle;
        if let Some(e) = error {
            return Err(self.command_error(e, None));
        }
        match next {
            Some((next_tli, next_tli_start)) => Ok(ReplEvent::EndOfTimeline {
                next_tli,
                next_tli_start,
            }),
            None => {
                Err(self.unexpected("end of streaming without a next timeline", "streaming WAL"))
            }
        }
    }

    /// Ends streaming from the client's side (CopyDone) and returns to
    /// command mode. WAL still in flight is discarded.
    pub async fn stop_streaming(&mut self) -> Result<(), WireError> {
        if !matches!(self.mode, Mode::Streaming { .. }) {
            return Err(self.busy("stop streaming"));
        }
        if matches!(self.mode, Mode::Streaming { stopping: false }) {
            frontend::copy_done(&mut self.wbuf);
            self.send().await?;
            self.mode = Mode::Streaming { stopping: true };
        }
        loop {
            match self.next_message().await? {
                BackendMessage::CopyDone => break,
                BackendMessage::CopyData(_)
                | BackendMessage::NoticeResponse(_)
                | BackendMessage::ParameterStatus { .. } => {}
                BackendMessage::ErrorResponse(e) => {
                    self.drain_to_ready().await?;
                    self.mode = Mode::Idle;
                    return Err(self.command_error(e, None));
                }
                other => return Err(self.unexpected(&other.name(), "stopping the stream")),
            }
        }
        // A historic timeline also sends its successor; not needed here.
        self.drain_to_ready().await?;
        self.mode = Mode::Idle;
        Ok(())
    }

    /// Sends a standby status update. `flush` must be what is durable: the
    /// server frees a slot's WAL up to it.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), WireError> {
        if !matches!(self.mode, Mode::Streaming { stopping: false }) {
            return Err(self.busy("send a status update"));
        }
        let mut payload = BytesMut::with_capacity(34);
        StandbyStatus {
            write,
            flush,
            apply,
            client_time: walproto::to_pg_timestamp(SystemTime::now()),
            reply_requested,
        }
        .encode(&mut payload);
        self.wbuf.put_u8(b'd');
        self.wbuf.put_i32(4 + payload.len() as i32);
        self.wbuf.extend_from_slice(&payload);
        self.send().await
    }
}

/// `(next_tli int8, next_tli_startpos text)` after a historic timeline.
pub(super) fn next_timeline(row: &[Option<Bytes>]) -> Result<(u32, Lsn), WireError> {
    let what = "next timeline result";
    let tli = text_at(row, 0, what)?;
    let tli = tli
        .parse()
        .map_err(|_| ProtoError::malformed(what, format!("timeline {tli:?}")))?;
    Ok((tli, lsn_at(row, 1, what)?))
}
