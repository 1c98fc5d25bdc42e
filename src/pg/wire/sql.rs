//! A plain SQL session (no `replication` startup parameter) on pgtide's own
//! protocol client, for one job only: reading `COPY … TO STDOUT` in bulk.
//!
//! tokio-postgres hands every CopyData message over as its own `Bytes`
//! through a channel, and reads the socket 8 KiB at a time; a dump reads
//! one message per row, millions of them. Here rows are slices of the read
//! buffer, handed over a whole read (up to [`COPY_READ_CHUNK`]) at a time.
//!
//! Owns: the COPY OUT conversation state. Must never: interpret the rows
//! (the caller does), or hold more than one read chunk plus the message
//! being completed.

use bytes::Buf;
use postgres_protocol::message::frontend;

use super::{Mode, WireClient, WireError};
use crate::pg::conninfo::ConnInfo;
use crate::pg::proto::copy::{complete_frames_end, CopyFrames};
use crate::pg::proto::messages::{self, BackendMessage};

/// Room for this many bytes in each read while receiving COPY rows.
pub const COPY_READ_CHUNK: usize = 256 * 1024;

impl WireClient {
    /// Opens a plain SQL session (as `pg::connect::connect` would, through
    /// this client's startup, authentication and TLS), for
    /// [`copy_out`](Self::copy_out).
    pub async fn connect_sql(ci: &ConnInfo, application_name: &str) -> Result<Self, WireError> {
        Self::connect_impl(ci, application_name, false, false).await
    }

    /// Runs SQL (one or more statements) and discards any rows.
    pub async fn execute(&mut self, sql: &str) -> Result<(), WireError> {
        self.simple_query(sql, None).await.map(|_| ())
    }

    /// Sends `COPY … TO STDOUT`; the rows follow with
    /// [`copy_out_rows`](Self::copy_out_rows).
    pub async fn copy_out(&mut self, sql: &str) -> Result<(), WireError> {
        self.ready("start a COPY")?;
        frontend::query(sql, &mut self.wbuf).map_err(|e| self.settings_error(e))?;
        self.send().await?;
        loop {
            match self.next_message().await? {
                BackendMessage::CopyOutResponse => {
                    self.mode = Mode::CopyOut { consumed: 0 };
                    return Ok(());
                }
                BackendMessage::ErrorResponse(e) => {
                    self.drain_to_ready().await?;
                    return Err(self.command_error(e, None));
                }
                BackendMessage::NoticeResponse(n) => self.notice(&n),
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.insert(name, value);
                }
                other => return Err(self.unexpected(&other.name(), "starting a COPY")),
            }
        }
    }

    /// The rows that have arrived, as many as one read brought in (at least
    /// one); `None` once the COPY is over and the session is ready for the
    /// next command. The batch borrows the read buffer: take every row
    /// before calling again.
    pub async fn copy_out_rows(&mut self) -> Result<Option<CopyFrames<'_>>, WireError> {
        let Mode::CopyOut { consumed } = &mut self.mode else {
            return Err(self.busy("receive COPY rows"));
        };
        let handed = std::mem::take(consumed);
        self.rbuf.advance(handed);
        loop {
            let end = match complete_frames_end(&self.rbuf) {
                Ok(end) => end,
                Err(e) => return Err(self.protocol(e)),
            };
            if end > 0 {
                self.mode = Mode::CopyOut { consumed: end };
                return Ok(Some(CopyFrames::new(&self.rbuf[..end])));
            }
            // Not a complete CopyData at the front: part of one (which may
            // be longer than other messages may be), another message, or
            // not all of one yet.
            if self.rbuf.is_empty() || self.rbuf[0] == b'd' {
                self.fill_up_to(COPY_READ_CHUNK).await?;
                continue;
            }
            let msg = match messages::decode(&mut self.rbuf) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.fill_up_to(COPY_READ_CHUNK).await?;
                    continue;
                }
                Err(e) => return Err(self.protocol(e)),
            };
            match msg {
                BackendMessage::CopyDone | BackendMessage::CommandComplete(_) => {}
                BackendMessage::ReadyForQuery { .. } => {
                    self.mode = Mode::Idle;
                    return Ok(None);
                }
                BackendMessage::ErrorResponse(e) => {
                    self.mode = Mode::Idle;
                    self.drain_to_ready().await?;
                    return Err(self.command_error(e, None));
                }
                BackendMessage::NoticeResponse(n) => self.notice(&n),
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.insert(name, value);
                }
                other => return Err(self.unexpected(&other.name(), "receiving COPY rows")),
            }
        }
    }
}
