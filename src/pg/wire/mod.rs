//! pgtide's own PostgreSQL wire client, for the two kinds of session
//! tokio-postgres does not serve well: replication connections
//! (`replication=true`: the physical walsender protocol it cannot speak) and
//! the dump workers' plain SQL sessions, whose COPY output it reads straight
//! into the pipeline without a copy per row. One client, one error type
//! ([`WireError`]), named for the wire rather than for one of its uses.
//!
//! Owns: the socket (TCP, TLS by `sslmode` exactly as `pg::connect` does it,
//! or a unix socket), the startup and authentication exchange (trust,
//! cleartext password, md5, SCRAM-SHA-256), the replication commands
//! (`IDENTIFY_SYSTEM`, `SHOW`, `TIMELINE_HISTORY`, slots,
//! `START_REPLICATION … PHYSICAL`, `BASE_BACKUP`), and classifying what the
//! server answers into [`WireError`].
//!
//! Must never: interpret bytes itself (every decoder lives in `pg::proto`;
//! this module only moves bytes and keeps the conversation state), hold more
//! than one backend message plus one read chunk in memory, retry on its own
//! (callers decide with [`WireError::is_retryable`]), or log a password.
//!
//! Files: `startup.rs` (socket, TLS, authentication), `commands.rs` (one
//! result set commands and slots), `streaming.rs` (`START_REPLICATION`),
//! `base_backup.rs`, `sql.rs` (plain SQL sessions for the dump's COPY),
//! `error.rs` (`WireError` and how server answers become one); this file
//! holds the conversation state and the message plumbing they share.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use super::connect::{self, ConnectError};
use super::conninfo::{ConnInfo, SslMode, Target};
use super::lsn::Lsn;
use super::proto::base_backup::{BaseBackupDecoder, BaseBackupStep, Shape};
pub use super::proto::base_backup::{BaseBackupEvent, Tablespace};
use super::proto::messages::{self, BackendMessage, ErrorFields};
use super::proto::replication::{self as walproto, StandbyStatus, WalMessage};
use super::proto::ProtoError;
use super::quote_literal;
use super::version::ServerVersion;

mod base_backup;
#[cfg(test)]
mod capture;
mod commands;
mod error;
mod sql;
mod startup;
mod streaming;

pub use commands::parse_size_setting;
use commands::*;
use error::*;
pub use error::{NoReplication, WireError};

/// How much is read from the socket at a time. A message longer than this
/// is assembled over several reads; the buffer never holds more than the
/// message being assembled plus one chunk.
const READ_CHUNK: usize = 64 * 1024;

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique identifier (decimal text, as PostgreSQL shows it).
    pub system_identifier: String,
    /// The server's current timeline.
    pub timeline: u32,
    /// The server's current WAL flush position.
    pub xlogpos: Lsn,
}

/// What `READ_REPLICATION_SLOT` says about a physical slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The oldest WAL the slot keeps; `None` before WAL was reserved.
    pub restart_lsn: Option<Lsn>,
    /// The timeline of `restart_lsn`.
    pub restart_tli: Option<u32>,
}

/// What [`WireClient::recv`] returns while streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplEvent {
    /// WAL bytes starting at `start`; `end` is the server's end of WAL.
    XLogData { start: Lsn, end: Lsn, data: Bytes },
    /// Answer with [`WireClient::send_status`] at once when
    /// `reply_requested`.
    Keepalive { end: Lsn, reply_requested: bool },
    /// The timeline being streamed ended (the server was promoted): continue
    /// with timeline `next_tli` from `next_tli_start`, after fetching its
    /// history. The client is back in command mode.
    EndOfTimeline { next_tli: u32, next_tli_start: Lsn },
}

/// Options of `BASE_BACKUP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// The backup label (shown in `backup_label` and `pg_stat_progress_basebackup`).
    pub label: String,
    /// Ask for an immediate checkpoint instead of a spread one.
    pub fast_checkpoint: bool,
    /// Include the WAL in the archive. pgtide streams WAL itself and always
    /// leaves this false.
    pub wal: bool,
    /// `backup_manifest` checksum algorithm: `CRC32C` (server default),
    /// `SHA224`, `SHA256`, `SHA384`, `SHA512` or `NONE`.
    pub manifest_checksums: Option<String>,
    /// Server-side rate limit in kB/s (32 to 1048576).
    pub max_rate_kbps: Option<u32>,
    /// Server-side compression, `method[:detail]`, e.g. `zstd:1`,
    /// `gzip:level=9` (PostgreSQL 15+).
    pub server_compression: Option<String>,
    /// Ask for the tablespace sizes (and, on 15+, progress messages).
    pub progress: bool,
    /// Wait for the end-of-backup WAL to be archived by the server's
    /// archive_command (`WAIT`).
    pub wait_for_wal_archive: bool,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        BaseBackupOptions {
            label: "pgtide base backup".to_owned(),
            fast_checkpoint: false,
            wal: false,
            manifest_checksums: None,
            max_rate_kbps: None,
            server_compression: None,
            progress: false,
            wait_for_wal_archive: false,
        }
    }
}

/// The conversation state.
#[derive(Debug)]
enum Mode {
    /// Ready for a command.
    Idle,
    /// In CopyBoth after `START_REPLICATION`. `stopping` once the client
    /// has sent its CopyDone.
    Streaming { stopping: bool },
    /// Receiving a base backup.
    BaseBackup {
        decoder: Box<BaseBackupDecoder>,
        error: Option<Box<ErrorFields>>,
    },
    /// Receiving the rows of a `COPY … TO STDOUT` (a plain SQL session).
    /// `consumed`: bytes at the front of `rbuf` the caller has been handed.
    CopyOut { consumed: usize },
    /// The connection broke or the peer spoke nonsense: only errors now.
    Broken,
}

impl Mode {
    fn doing(&self) -> &'static str {
        match self {
            Mode::Idle => "not streaming",
            Mode::Streaming { .. } => "streaming WAL",
            Mode::BaseBackup { .. } => "receiving a base backup",
            Mode::CopyOut { .. } => "receiving COPY rows",
            Mode::Broken => "broken",
        }
    }
}

/// The byte stream under the protocol: TCP, TLS over TCP, or a unix socket.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection: a replication session or a plain SQL session (see
/// `sql.rs`). Not `Clone`; one command at a time.
pub struct WireClient {
    stream: Box<dyn Io>,
    server: Target,
    user: String,
    /// Bytes read and not yet decoded.
    rbuf: BytesMut,
    /// Bytes to send (cleared after every send).
    wbuf: BytesMut,
    params: HashMap<String, String>,
    version: ServerVersion,
    mode: Mode,
    /// An event answered before `recv` was called (a `START_REPLICATION` at
    /// the very end of a historic timeline).
    pending: Option<ReplEvent>,
    /// A copy of every byte read, while capturing fixtures (tests only).
    tap: Option<Vec<u8>>,
}

impl std::fmt::Debug for WireClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireClient")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("version", &self.version)
            .field("mode", &self.mode.doing())
            .finish()
    }
}

impl WireClient {
    /// The server's version, from the `server_version` it reported at startup.
    pub fn server_version(&self) -> ServerVersion {
        self.version
    }

    /// A parameter the server reported (`server_version`, `integer_datetimes`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The server this connection is open to.
    pub fn server(&self) -> &Target {
        &self.server
    }

    // ---- plumbing -------------------------------------------------------

    fn ready(&self, wanted: &'static str) -> Result<(), WireError> {
        match self.mode {
            Mode::Idle => Ok(()),
            Mode::Broken => Err(self.lost("the connection failed earlier")),
            _ => Err(self.busy(wanted)),
        }
    }

    fn busy(&self, wanted: &'static str) -> WireError {
        if matches!(self.mode, Mode::Broken) {
            return self.lost("the connection failed earlier");
        }
        WireError::Busy {
            doing: self.mode.doing(),
            wanted,
        }
    }

    fn lost(&self, reason: &str) -> WireError {
        WireError::ConnectionLost {
            server: self.server.clone(),
            reason: reason.to_owned(),
        }
    }

    fn protocol(&mut self, e: ProtoError) -> WireError {
        self.mode = Mode::Broken;
        WireError::Protocol(e)
    }

    fn unexpected(&mut self, got: &str, during: &'static str) -> WireError {
        self.protocol(ProtoError::Unexpected {
            got: got.to_owned(),
            during,
        })
    }

    fn notice(&self, n: &ErrorFields) {
        // Notices (e.g. "WAL archiving is not enabled") are the server's
        // advice to an interactive user; pgtide records them for debugging.
        tracing::debug!(server = %self.server, severity = %n.severity, message = %n.message, "server notice");
    }

    /// Sends and clears `wbuf`.
    async fn send(&mut self) -> Result<(), WireError> {
        let result = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        }
        .await;
        self.wbuf.clear();
        result.map_err(|e| {
            self.mode = Mode::Broken;
            self.lost(&io_reason(&e))
        })
    }

    /// Reads once into `rbuf` (cancel-safe: bytes are only appended).
    async fn fill(&mut self) -> Result<(), WireError> {
        self.fill_up_to(READ_CHUNK).await
    }

    /// [`fill`](Self::fill) with room for `chunk` bytes in one read.
    async fn fill_up_to(&mut self, chunk: usize) -> Result<(), WireError> {
        if matches!(self.mode, Mode::Broken) {
            return Err(self.lost("the connection failed earlier"));
        }
        self.rbuf.reserve(chunk);
        let before = self.rbuf.len();
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => {
                self.mode = Mode::Broken;
                let reason = if self.rbuf.is_empty() {
                    "the server closed the connection"
                } else {
                    "the server closed the connection in the middle of a message"
                };
                Err(self.lost(reason))
            }
            Ok(_) => {
                if let Some(tap) = &mut self.tap {
                    tap.extend_from_slice(&self.rbuf[before..]);
                }
                Ok(())
            }
            Err(e) => {
                self.mode = Mode::Broken;
                Err(self.lost(&io_reason(&e)))
            }
        }
    }

    async fn next_message(&mut self) -> Result<BackendMessage, WireError> {
        loop {
            match messages::decode(&mut self.rbuf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => self.fill().await?,
                Err(e) => return Err(self.protocol(e)),
            }
        }
    }

    async fn drain_to_ready(&mut self) -> Result<(), WireError> {
        loop {
            if let BackendMessage::ReadyForQuery { .. } = self.next_message().await? {
                return Ok(());
            }
        }
    }

    /// Runs a command that answers with at most one result set.
    async fn simple_query(
        &mut self,
        sql: &str,
        slot: Option<&str>,
    ) -> Result<QueryResult, WireError> {
        self.ready("run a command")?;
        frontend::query(sql, &mut self.wbuf).map_err(|e| self.settings_error(e))?;
        self.send().await?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            match self.next_message().await? {
                BackendMessage::RowDescription(_) => {}
                BackendMessage::DataRow(row) => result.rows.push(row),
                BackendMessage::CommandComplete(_) | BackendMessage::EmptyQueryResponse => {}
                BackendMessage::ErrorResponse(e) => {
                    error.get_or_insert(e);
                }
                BackendMessage::NoticeResponse(n) => self.notice(&n),
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.insert(name, value);
                }
                BackendMessage::ReadyForQuery { .. } => break,
                other => return Err(self.unexpected(&other.name(), "running a command")),
            }
        }
        match error {
            Some(e) => Err(self.command_error(e, slot)),
            None => Ok(result),
        }
    }

    /// Starts recording every byte read (for capturing fixtures).
    #[cfg(test)]
    pub(crate) fn start_tap(&mut self) {
        self.tap = Some(self.rbuf.to_vec());
    }

    /// The bytes read since `start_tap`, less what is still unconsumed.
    #[cfg(test)]
    pub(crate) fn take_tap(&mut self) -> Vec<u8> {
        let mut tap = self.tap.take().unwrap_or_default();
        tap.truncate(tap.len().saturating_sub(self.rbuf.len()));
        tap
    }
}

/// The I/O shell against a fake server that replays captured bytes.
#[cfg(test)]
mod replay {
    use tokio::net::TcpListener;

    use super::*;
    use crate::pg::proto::testutil::fixture;

    /// Serves one connection: reads the startup message, sends `startup`;
    /// then for each of `answers`, reads one client message and sends the
    /// answer (cut to `cut` bytes, then closes, if given). Afterwards it
    /// reads and discards until the client closes.
    async fn fake_server(startup: Vec<u8>, answers: Vec<Vec<u8>>, cut: Option<usize>) -> ConnInfo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let len = s.read_u32().await.unwrap();
            let mut rest = vec![0; len as usize - 4];
            s.read_exact(&mut rest).await.unwrap();
            s.write_all(&startup).await.unwrap();
            for answer in answers {
                // One client message: tag, length, body.
                let _tag = s.read_u8().await.unwrap();
                let len = s.read_u32().await.unwrap();
                let mut body = vec![0; len as usize - 4];
                s.read_exact(&mut body).await.unwrap();
                match cut {
                    Some(n) => {
                        s.write_all(&answer[..n.min(answer.len())]).await.unwrap();
                        return;
                    }
                    None => s.write_all(&answer).await.unwrap(),
                }
            }
            let mut sink = vec![0; 4096];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        ConnInfo::parse(&format!(
            "host=127.0.0.1 port={port} user=postgres password=md5-pw sslmode=disable"
        ))
        .unwrap()
    }

    fn error_response(code: &str, message: &str) -> Vec<u8> {
        let body = format!("SFATAL\0VFATAL\0C{code}\0M{message}\0\0");
        let mut v = vec![b'E'];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body.as_bytes());
        v
    }

    #[tokio::test]
    async fn base_backups_through_the_shell() {
        for major in [13, 14, 15, 16, 17, 18] {
            let backup = fixture(&format!("base_backup/{major}-basebackup-full.bin.zst"));
            let ci = fake_server(
                fixture(&format!("auth/{major}-startup-trust.bin")),
                vec![backup.clone()],
                None,
            )
            .await;
            let mut c = WireClient::connect(&ci, "test").await.unwrap();
            assert_eq!(c.server_version().major(), major);
            c.base_backup(&BaseBackupOptions::default()).await.unwrap();
            let mut events = Vec::new();
            while let Some(e) = c.base_backup_next().await.unwrap() {
                events.push(e);
            }
            assert!(matches!(
                events.first(),
                Some(BaseBackupEvent::Started { .. })
            ));
            assert!(matches!(
                events.last(),
                Some(BaseBackupEvent::Finished { .. })
            ));
            let data: usize = events
                .iter()
                .map(|e| match e {
                    BaseBackupEvent::ArchiveData(d) => d.len(),
                    _ => 0,
                })
                .sum();
            assert!(data > 10 << 20, "{major}: {data} bytes of archives");
            // Done: the next call says so again, and commands are allowed.
            assert!(c.base_backup_next().await.unwrap().is_none());
            assert!(c.ready("x").is_ok());

            // The same stream cut short: ConnectionLost, not a panic.
            let ci = fake_server(
                fixture(&format!("auth/{major}-startup-trust.bin")),
                vec![backup.clone()],
                Some(backup.len() / 2 + 3),
            )
            .await;
            let mut c = WireClient::connect(&ci, "test").await.unwrap();
            c.base_backup(&BaseBackupOptions::default()).await.unwrap();
            let e = loop {
                match c.base_backup_next().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{major}: a cut backup completed"),
                    Err(e) => break e,
                }
            };
            assert!(matches!(e, WireError::ConnectionLost { .. }), "{e}");
            assert!(e.is_retryable());
            assert!(matches!(
                c.identify_system().await,
                Err(WireError::ConnectionLost { .. })
            ));
        }
    }

    #[tokio::test]
    async fn server_errors_are_classified() {
        let ci = fake_server(
            fixture("auth/15-startup-trust.bin"),
            vec![fixture("base_backup/15-basebackup-error-max-rate.bin")],
            None,
        )
        .await;
        let mut c = WireClient::connect(&ci, "test").await.unwrap();
        c.base_backup(&BaseBackupOptions::default()).await.unwrap();
        let e = c.base_backup_next().await.unwrap_err();
        assert!(
            matches!(&e, WireError::Server { code, .. } if *code == SqlState::NUMERIC_VALUE_OUT_OF_RANGE),
            "{e}"
        );
        assert!(!e.is_retryable());

        type Check = fn(&WireError) -> bool;
        let cases: [(&str, &str, Check); 4] = [
            (
                "28000",
                "no pg_hba.conf entry for replication connection from host \"127.0.0.1\", user \"x\", no encryption",
                |e| matches!(e, WireError::NoReplicationPrivilege { .. }),
            ),
            (
                "42501",
                "permission denied to start WAL sender",
                |e| matches!(e, WireError::NoReplicationPrivilege { .. }),
            ),
            (
                "53300",
                "number of requested standby connections exceeds max_wal_senders (currently 0)",
                |e| matches!(e, WireError::NoWalSenders { max_wal_senders: Some(0), .. }),
            ),
            (
                "28P01",
                "password authentication failed for user \"x\"",
                |e| matches!(e, WireError::Auth { .. }),
            ),
        ];
        for (code, message, check) in cases {
            let ci = fake_server(error_response(code, message), vec![], None).await;
            let e = WireClient::connect(&ci, "test").await.unwrap_err();
            assert!(check(&e), "{code}: {e:?}");
        }
    }

    #[tokio::test]
    async fn streams_through_the_shell() {
        for major in [13, 14, 15, 16, 17, 18] {
            // The end of a historic timeline.
            let ci = fake_server(
                fixture(&format!("auth/{major}-startup-trust.bin")),
                vec![fixture(&format!(
                    "replication/{major}-stream-timeline-end.bin"
                ))],
                None,
            )
            .await;
            let mut c = WireClient::connect(&ci, "test").await.unwrap();
            c.start_physical(None, Lsn(0x100), 1).await.unwrap();
            let mut xlog = 0;
            let end = loop {
                match c.recv().await.unwrap() {
                    ReplEvent::XLogData { .. } => xlog += 1,
                    ReplEvent::Keepalive { .. } => {}
                    e @ ReplEvent::EndOfTimeline { .. } => break e,
                }
            };
            assert!(xlog >= 1, "{major}");
            assert!(
                matches!(end, ReplEvent::EndOfTimeline { next_tli: 2, .. }),
                "{major}: {end:?}"
            );
            assert!(c.ready("x").is_ok(), "{major}: not back in command mode");

            // A live stream, then the server goes away.
            let ci = fake_server(
                fixture(&format!("auth/{major}-startup-trust.bin")),
                vec![fixture(&format!("replication/{major}-stream-inserts.bin"))],
                Some(usize::MAX),
            )
            .await;
            let mut c = WireClient::connect(&ci, "test").await.unwrap();
            c.start_physical(Some("s"), Lsn(0x100), 2).await.unwrap();
            let (mut xlog, mut keepalives) = (0, 0);
            let e = loop {
                match c.recv_timeout(Duration::from_secs(10)).await {
                    Ok(Some(ReplEvent::XLogData { .. })) => xlog += 1,
                    Ok(Some(ReplEvent::Keepalive { .. })) => {
                        keepalives += 1;
                        c.send_status(Lsn(1), Lsn(1), Lsn(0), false).await.ok();
                    }
                    Ok(other) => panic!("{major}: {other:?}"),
                    Err(e) => break e,
                }
            };
            assert!(xlog >= 3 && keepalives >= 1, "{major}");
            assert!(matches!(e, WireError::ConnectionLost { .. }), "{e}");
        }
    }

    #[tokio::test]
    async fn password_methods() {
        // md5: the fake server takes any answer; the client must send one.
        let ci = fake_server(fixture("auth/15-startup-md5.bin"), vec![], None).await;
        let c = WireClient::connect(&ci, "test").await.unwrap();
        assert_eq!(c.server_version().major(), 15);
        // Without a password: a clear Auth error before anything is sent.
        let mut ci = fake_server(fixture("auth/15-startup-md5.bin"), vec![], None).await;
        ci.password = None;
        let e = WireClient::connect(&ci, "test").await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no password supplied for user \"postgres\""),
            "{e}"
        );
        // SCRAM replayed: the recorded server nonce does not extend this
        // client's nonce, so the exchange must fail cleanly.
        let ci = fake_server(fixture("auth/16-startup-scram.bin"), vec![], None).await;
        let e = WireClient::connect(&ci, "test").await.unwrap_err();
        assert!(matches!(e, WireError::Auth { .. }), "{e:?}");
    }

    /// Like [`fake_server`], but answers each query by its text and sends
    /// the queries it got (in order) down `seen`.
    async fn scripted_server(
        startup: Vec<u8>,
        answer: fn(&str) -> Vec<u8>,
        seen: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> ConnInfo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let len = s.read_u32().await.unwrap();
            let mut rest = vec![0; len as usize - 4];
            s.read_exact(&mut rest).await.unwrap();
            s.write_all(&startup).await.unwrap();
            loop {
                let Ok(tag) = s.read_u8().await else { return };
                let len = s.read_u32().await.unwrap();
                let mut body = vec![0; len as usize - 4];
                s.read_exact(&mut body).await.unwrap();
                if tag != b'Q' {
                    return;
                }
                let q = String::from_utf8_lossy(&body[..body.len() - 1]).into_owned();
                let a = answer(&q);
                let _ = seen.send(q);
                s.write_all(&a).await.unwrap();
            }
        });
        ConnInfo::parse(&format!(
            "host=127.0.0.1 port={port} user=postgres sslmode=disable"
        ))
        .unwrap()
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// RowDescription, one DataRow, CommandComplete, ReadyForQuery.
    fn one_row_result(tag: &str, names: &[&str], values: &[Option<&str>]) -> Vec<u8> {
        let mut t = (names.len() as i16).to_be_bytes().to_vec();
        for n in names {
            t.extend_from_slice(n.as_bytes());
            t.push(0);
            t.extend_from_slice(&[
                0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 255, 255, 255, 255, 255, 255, 0, 0,
            ]);
        }
        let mut d = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(v) => {
                    d.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    d.extend_from_slice(v.as_bytes());
                }
                None => d.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let mut out = frame(b'T', &t);
        out.extend(frame(b'D', &d));
        out.extend(frame(b'C', format!("{tag}\0").as_bytes()));
        out.extend(frame(b'Z', b"I"));
        out
    }

    /// A physical slot's CREATE_REPLICATION_SLOT answer: the consistent
    /// point is 0/0 (physical slots have none), on every version.
    fn created_answer() -> Vec<u8> {
        one_row_result(
            "CREATE_REPLICATION_SLOT",
            &[
                "slot_name",
                "consistent_point",
                "snapshot_name",
                "output_plugin",
            ],
            &[Some("s"), Some("0/0"), None, None],
        )
    }

    /// On 13/14 (no READ_REPLICATION_SLOT) a slot created with RESERVE_WAL
    /// reports the server's position after creating it, never 0/0 (from
    /// which START_REPLICATION fails: "requested WAL segment … has already
    /// been removed"); on 15+ the slot's restart LSN.
    #[tokio::test]
    async fn reserved_slot_start_on_every_version() {
        for major in [13u32, 14, 15, 16, 17, 18] {
            fn answer_13_14(q: &str) -> Vec<u8> {
                if q.starts_with("CREATE_REPLICATION_SLOT") {
                    created_answer()
                } else if q == "IDENTIFY_SYSTEM" {
                    // A capture from a real server: xlogpos 0/1709900.
                    fixture("replication/14-command-identify-system.bin")
                } else {
                    frame(b'E', b"SERROR\0C42601\0Msyntax error\0\0")
                        .into_iter()
                        .chain(frame(b'Z', b"I"))
                        .collect()
                }
            }
            fn answer_15_16(q: &str) -> Vec<u8> {
                if q.starts_with("CREATE_REPLICATION_SLOT") {
                    created_answer()
                } else if q.starts_with("READ_REPLICATION_SLOT") {
                    one_row_result(
                        "READ_REPLICATION_SLOT",
                        &["slot_type", "restart_lsn", "restart_tli"],
                        &[Some("physical"), Some("0/3000028"), Some("1")],
                    )
                } else {
                    frame(b'E', b"SERROR\0C42601\0Msyntax error\0\0")
                        .into_iter()
                        .chain(frame(b'Z', b"I"))
                        .collect()
                }
            }
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let old = major < 15;
            let ci = scripted_server(
                fixture(&format!("auth/{major}-startup-trust.bin")),
                if old { answer_13_14 } else { answer_15_16 },
                tx,
            )
            .await;
            let mut c = WireClient::connect(&ci, "test").await.unwrap();
            let lsn = c.create_physical_slot("s", true, true).await.unwrap();
            let mut queries = Vec::new();
            while let Ok(q) = rx.try_recv() {
                queries.push(q);
            }
            if old {
                assert_eq!(lsn, Some("0/1709900".parse().unwrap()), "{major}");
                assert_eq!(
                    queries,
                    [
                        "CREATE_REPLICATION_SLOT s TEMPORARY PHYSICAL RESERVE_WAL",
                        "IDENTIFY_SYSTEM"
                    ],
                    "{major}"
                );
            } else {
                assert_eq!(lsn, Some("0/3000028".parse().unwrap()), "{major}");
                assert_eq!(
                    queries,
                    [
                        "CREATE_REPLICATION_SLOT s TEMPORARY PHYSICAL (RESERVE_WAL)",
                        "READ_REPLICATION_SLOT s"
                    ],
                    "{major}"
                );
            }
            assert!(c.ready("x").is_ok(), "{major}");
        }
    }
}
