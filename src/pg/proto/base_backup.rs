//! The server's answer to `BASE_BACKUP`, in both shapes, turned into one
//! sequence of [`BaseBackupEvent`]s:
//!
//! - PostgreSQL 15+: a result set with the start LSN and timeline, the
//!   tablespace list, then ONE CopyOut stream whose CopyData messages start
//!   with a type byte: `n` new archive (archive name and tablespace path as C
//!   strings), `d` data of the current archive or manifest, `p` progress
//!   (`i64` bytes so far), `m` the manifest follows. Then a result set with
//!   the end LSN and timeline.
//! - PostgreSQL 13–14: the same result sets around one CopyOut stream per
//!   tablespace, in the order of the tablespace list (each a tar archive
//!   with no type bytes), then one CopyOut stream holding the manifest.
//!   These servers leave out the tar end-of-archive blocks; the decoder adds
//!   them (as pg_basebackup does), so every archive is a complete tar file
//!   whatever the server version.
//!
//! Owns: the order of these messages and what they mean. Must never: read a
//! socket, or buffer archive data (each CopyData becomes one event, a
//! zero-copy slice of the input).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::messages::{self, BackendMessage, ErrorFields};
use super::{ProtoError, Reader};
use crate::pg::lsn::Lsn;

/// The two zero blocks that end a tar archive.
static TAR_END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// Which answer to expect; pick with
/// `ServerVersion::uses_new_base_backup_syntax`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// PostgreSQL 15+: one tagged CopyOut stream.
    Tagged,
    /// PostgreSQL 13–14: one CopyOut tar stream per tablespace, then one
    /// for the manifest.
    TarPerTablespace,
}

/// One entry of the tablespace list the server sends before the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    /// `None` for the main data directory (`base.tar`).
    pub oid: Option<u32>,
    /// The tablespace's directory on the server; `None` for the main one.
    pub location: Option<String>,
    /// Estimated size in bytes, when `PROGRESS` was asked for.
    pub size: Option<u64>,
}

impl Tablespace {
    /// The archive name PostgreSQL (and pg_basebackup) give it:
    /// `base.tar` or `<oid>.tar`.
    pub fn archive_name(&self) -> String {
        match self.oid {
            Some(oid) => format!("{oid}.tar"),
            None => "base.tar".to_owned(),
        }
    }
}

/// What a base backup produces, in order: `Started`, `Tablespaces`, then
/// for each archive `ArchiveStart` and its `ArchiveData` (with `Progress`
/// mixed in on 15+), then `ManifestStart` and `ManifestData` (the
/// `backup_manifest` file), and `Finished`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseBackupEvent {
    /// The backup's checkpoint: WAL from `start_lsn` on `timeline` is needed
    /// to make it consistent.
    Started {
        start_lsn: Lsn,
        timeline: u32,
    },
    Tablespaces(Vec<Tablespace>),
    /// A new archive (a tar file, or compressed tar with server compression):
    /// `base.tar`, `<oid>.tar`, …
    ArchiveStart {
        name: String,
        tablespace_location: Option<String>,
    },
    ArchiveData(Bytes),
    /// Bytes of archive data the server has sent so far (15+ with
    /// `PROGRESS`).
    Progress(u64),
    ManifestStart,
    ManifestData(Bytes),
    /// The backup is consistent once WAL up to `end_lsn` is replayed.
    Finished {
        end_lsn: Lsn,
        timeline: u32,
    },
}

/// What [`BaseBackupDecoder::decode`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseBackupStep {
    Event(BaseBackupEvent),
    /// The server reported an error; the answer ends with `Done` after it.
    ServerError(ErrorFields),
    /// A notice or warning from the server (e.g. WAL archiving is off).
    Notice(ErrorFields),
    /// ReadyForQuery: the connection is back in command mode. Nothing after
    /// it in the buffer is consumed.
    Done,
}

/// Which result set a RowDescription opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResultSet {
    Start,
    Tablespaces,
    End,
}

/// Where inside a CopyOut stream the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    No,
    /// Inside an archive's data (13–14: the tar of one tablespace).
    Archive,
    Manifest,
}

/// The state machine; feed it the server's bytes after the `BASE_BACKUP`
/// command was sent.
#[derive(Debug, Clone)]
pub struct BaseBackupDecoder {
    shape: Shape,
    results_seen: usize,
    current: Option<ResultSet>,
    tablespaces: Vec<Tablespace>,
    tablespaces_sent: bool,
    copies_seen: usize,
    copy: Copy,
    /// 15+: an `n` message has opened an archive.
    opened: bool,
    started: bool,
    finished: bool,
    failed: bool,
    done: bool,
    queue: VecDeque<BaseBackupStep>,
}

impl BaseBackupDecoder {
    pub fn new(shape: Shape) -> BaseBackupDecoder {
        BaseBackupDecoder {
            shape,
            results_seen: 0,
            current: None,
            tablespaces: Vec::new(),
            tablespaces_sent: false,
            copies_seen: 0,
            copy: Copy::No,
            opened: false,
            started: false,
            finished: false,
            failed: false,
            done: false,
            queue: VecDeque::new(),
        }
    }

    /// True after ReadyForQuery.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next step from the bytes in `buf`; `Ok(None)` = need more bytes
    /// (or, after `Done`, nothing more to say: later bytes stay in `buf`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BaseBackupStep>, ProtoError> {
        loop {
            if let Some(step) = self.queue.pop_front() {
                return Ok(Some(step));
            }
            if self.done {
                return Ok(None);
            }
            match messages::decode(buf)? {
                None => return Ok(None),
                Some(msg) => self.handle(msg)?,
            }
        }
    }

    /// At the end of the stream: an error unless ReadyForQuery was seen.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if self.done {
            Ok(())
        } else {
            Err(ProtoError::Truncated {
                what: "a base backup",
            })
        }
    }

    fn event(&mut self, e: BaseBackupEvent) {
        self.queue.push_back(BaseBackupStep::Event(e));
    }

    fn unexpected(&self, got: &BackendMessage) -> ProtoError {
        ProtoError::Unexpected {
            got: got.name(),
            during: "receiving a base backup",
        }
    }

    /// Sends the tablespace list once its result set is complete.
    fn flush_tablespaces(&mut self) {
        if self.results_seen >= 2 && !self.tablespaces_sent {
            self.tablespaces_sent = true;
            let list = self.tablespaces.clone();
            self.event(BaseBackupEvent::Tablespaces(list));
        }
    }

    fn handle(&mut self, msg: BackendMessage) -> Result<(), ProtoError> {
        match msg {
            BackendMessage::ErrorResponse(e) => {
                self.failed = true;
                self.queue.push_back(BaseBackupStep::ServerError(e));
            }
            BackendMessage::NoticeResponse(n) => self.queue.push_back(BaseBackupStep::Notice(n)),
            BackendMessage::ParameterStatus { .. } => {}
            BackendMessage::ReadyForQuery { .. } => {
                if !self.failed && !self.finished {
                    return Err(ProtoError::Unexpected {
                        got: "ReadyForQuery before the end position".to_owned(),
                        during: "receiving a base backup",
                    });
                }
                self.done = true;
                self.queue.push_back(BaseBackupStep::Done);
            }
            BackendMessage::RowDescription(columns) => {
                if self.copy != Copy::No {
                    return Err(self.unexpected(&BackendMessage::RowDescription(columns)));
                }
                self.flush_tablespaces();
                let set = match self.results_seen {
                    0 => ResultSet::Start,
                    1 => ResultSet::Tablespaces,
                    2 => ResultSet::End,
                    _ => return Err(self.unexpected(&BackendMessage::RowDescription(columns))),
                };
                let want = if set == ResultSet::Tablespaces { 3 } else { 2 };
                if columns.len() != want {
                    return Err(ProtoError::malformed(
                        "base backup result set",
                        format!("{} columns, expected {want}", columns.len()),
                    ));
                }
                self.results_seen += 1;
                self.current = Some(set);
            }
            BackendMessage::DataRow(values) => match self.current {
                Some(ResultSet::Start) if !self.started => {
                    let (lsn, tli) = position(&values)?;
                    self.started = true;
                    self.event(BaseBackupEvent::Started {
                        start_lsn: lsn,
                        timeline: tli,
                    });
                }
                Some(ResultSet::End) if !self.finished => {
                    let (lsn, tli) = position(&values)?;
                    self.finished = true;
                    self.event(BaseBackupEvent::Finished {
                        end_lsn: lsn,
                        timeline: tli,
                    });
                }
                Some(ResultSet::Tablespaces) => {
                    let ts = tablespace(&values)?;
                    self.tablespaces.push(ts);
                }
                _ => return Err(self.unexpected(&BackendMessage::DataRow(values))),
            },
            BackendMessage::CommandComplete(_) => {
                self.flush_tablespaces();
                self.current = None;
            }
            BackendMessage::CopyOutResponse => {
                if !self.started || self.copy != Copy::No || self.finished {
                    return Err(self.unexpected(&BackendMessage::CopyOutResponse));
                }
                self.flush_tablespaces();
                self.current = None;
                let i = self.copies_seen;
                self.copies_seen += 1;
                match self.shape {
                    Shape::Tagged if i == 0 => self.copy = Copy::Archive,
                    Shape::Tagged => return Err(self.unexpected(&BackendMessage::CopyOutResponse)),
                    Shape::TarPerTablespace => {
                        if let Some(ts) = self.tablespaces.get(i) {
                            let name = ts.archive_name();
                            let tablespace_location = ts.location.clone();
                            self.copy = Copy::Archive;
                            self.event(BaseBackupEvent::ArchiveStart {
                                name,
                                tablespace_location,
                            });
                        } else if i == self.tablespaces.len() {
                            self.copy = Copy::Manifest;
                            self.event(BaseBackupEvent::ManifestStart);
                        } else {
                            return Err(self.unexpected(&BackendMessage::CopyOutResponse));
                        }
                    }
                }
            }
            BackendMessage::CopyData(payload) => match (self.shape, self.copy) {
                (_, Copy::No) => return Err(self.unexpected(&BackendMessage::CopyData(payload))),
                (Shape::TarPerTablespace, Copy::Archive) => {
                    self.event(BaseBackupEvent::ArchiveData(payload))
                }
                (Shape::TarPerTablespace, Copy::Manifest) => {
                    self.event(BaseBackupEvent::ManifestData(payload))
                }
                (Shape::Tagged, _) => self.tagged(payload)?,
            },
            BackendMessage::CopyDone => {
                if self.copy == Copy::No {
                    return Err(self.unexpected(&BackendMessage::CopyDone));
                }
                if self.shape == Shape::TarPerTablespace && self.copy == Copy::Archive {
                    // 13–14 leave the end-of-archive blocks out; add them, as
                    // pg_basebackup does, so every archive is a complete tar.
                    self.event(BaseBackupEvent::ArchiveData(Bytes::from_static(
                        &TAR_END_OF_ARCHIVE,
                    )));
                }
                self.copy = Copy::No;
            }
            other => return Err(self.unexpected(&other)),
        }
        Ok(())
    }

    /// One CopyData of the 15+ stream.
    fn tagged(&mut self, payload: Bytes) -> Result<(), ProtoError> {
        let what = "base backup CopyData";
        let Some(&tag) = payload.first() else {
            return Err(ProtoError::malformed(what, "empty message"));
        };
        match tag {
            b'n' => {
                let mut r = Reader::new(&payload[1..], "new-archive message");
                let name = r.string()?;
                let location = r.string()?;
                if name.is_empty() {
                    return Err(ProtoError::malformed(
                        "new-archive message",
                        "empty archive name",
                    ));
                }
                self.copy = Copy::Archive;
                self.opened = true;
                self.event(BaseBackupEvent::ArchiveStart {
                    name,
                    tablespace_location: (!location.is_empty()).then_some(location),
                });
            }
            b'd' => {
                let data = payload.slice(1..);
                match self.copy {
                    Copy::Manifest => self.event(BaseBackupEvent::ManifestData(data)),
                    _ if self.opened => self.event(BaseBackupEvent::ArchiveData(data)),
                    _ => {
                        return Err(ProtoError::Unexpected {
                            got: "archive data before any new-archive message".to_owned(),
                            during: "receiving a base backup",
                        })
                    }
                }
            }
            b'p' => {
                let mut r = Reader::new(&payload[1..], "progress message");
                let done = r.i64()?;
                let done = u64::try_from(done).map_err(|_| {
                    ProtoError::malformed("progress message", "negative byte count")
                })?;
                self.event(BaseBackupEvent::Progress(done));
            }
            b'm' => {
                self.copy = Copy::Manifest;
                self.event(BaseBackupEvent::ManifestStart);
            }
            other => {
                return Err(ProtoError::Unexpected {
                    got: format!("base backup message of type {:?}", other as char),
                    during: "receiving a base backup",
                })
            }
        }
        Ok(())
    }
}

/// `(recptr text, tli int8)`.
fn position(values: &[Option<Bytes>]) -> Result<(Lsn, u32), ProtoError> {
    let what = "base backup position";
    if values.len() != 2 {
        return Err(ProtoError::malformed(
            what,
            format!("{} columns, expected 2", values.len()),
        ));
    }
    let lsn =
        messages::text(&values[0], what)?.ok_or_else(|| ProtoError::malformed(what, "NULL LSN"))?;
    let lsn: Lsn = lsn
        .parse()
        .map_err(|e: String| ProtoError::malformed(what, e))?;
    let tli = messages::text(&values[1], what)?
        .ok_or_else(|| ProtoError::malformed(what, "NULL timeline"))?;
    let tli: u32 = tli
        .parse()
        .map_err(|_| ProtoError::malformed(what, format!("timeline {tli:?}")))?;
    Ok((lsn, tli))
}

/// `(spcoid oid, spclocation text, size int8)`, each possibly NULL.
fn tablespace(values: &[Option<Bytes>]) -> Result<Tablespace, ProtoError> {
    let what = "tablespace list";
    if values.len() != 3 {
        return Err(ProtoError::malformed(
            what,
            format!("{} columns, expected 3", values.len()),
        ));
    }
    let oid = messages::text(&values[0], what)?
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| ProtoError::malformed(what, format!("oid {s:?}")))
        })
        .transpose()?;
    let location = messages::text(&values[1], what)?;
    let size = messages::text(&values[2], what)?
        .map(|s| {
            // PostgreSQL sends the size in kB.
            s.parse::<u64>()
                .map(|kb| kb.saturating_mul(1024))
                .map_err(|_| ProtoError::malformed(what, format!("size {s:?}")))
        })
        .transpose()?;
    Ok(Tablespace {
        oid,
        location,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::proto::tar::{EntryKind, TarEvent, TarParser};
    use crate::pg::proto::testutil::{every_byte, feed, fixture, fixtures, random_splits};

    fn shape_of(name: &str) -> Shape {
        let major: u32 = name
            .rsplit('/')
            .next()
            .and_then(|f| f.split('-').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no major version in the name"));
        if major >= 15 {
            Shape::Tagged
        } else {
            Shape::TarPerTablespace
        }
    }

    fn run(
        name: &str,
        bytes: &[u8],
        splits: &[usize],
    ) -> (Vec<BaseBackupStep>, Result<(), ProtoError>) {
        let mut d = BaseBackupDecoder::new(shape_of(name));
        let (steps, rest) = feed(bytes, splits, |b| d.decode(b));
        let end = rest.and_then(|rest| {
            if rest.is_empty() {
                d.finish()
            } else {
                Err(ProtoError::Truncated { what: "leftover" })
            }
        });
        (steps, end)
    }

    /// Checks a complete backup: order of events, tar archives that parse
    /// to the end with the files a data directory needs, a JSON manifest
    /// whose WAL range starts at the start LSN.
    fn check_complete(name: &str, steps: &[BaseBackupStep]) {
        let events: Vec<&BaseBackupEvent> = steps
            .iter()
            .filter_map(|s| match s {
                BaseBackupStep::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(steps.last(), Some(&BaseBackupStep::Done), "{name}");
        let Some(BaseBackupEvent::Started {
            start_lsn,
            timeline,
        }) = events.first()
        else {
            panic!("{name}: does not start with Started")
        };
        assert!(
            matches!(events.get(1), Some(BaseBackupEvent::Tablespaces(_))),
            "{name}"
        );
        let Some(BaseBackupEvent::Finished { end_lsn, .. }) = events.last() else {
            panic!("{name}: does not end with Finished")
        };
        assert!(end_lsn >= start_lsn, "{name}");

        let mut archives: Vec<(String, TarParser, Vec<String>)> = Vec::new();
        let mut manifest = Vec::new();
        let mut in_manifest = false;
        let mut last_progress = 0;
        for e in &events {
            match e {
                BaseBackupEvent::ArchiveStart { name, .. } => {
                    archives.push((name.clone(), TarParser::new(), Vec::new()));
                }
                BaseBackupEvent::ArchiveData(d) => {
                    let (_, parser, paths) = archives.last_mut().expect("data before archive");
                    let mut buf = BytesMut::from(&d[..]);
                    while let Some(ev) = parser.decode(&mut buf).unwrap() {
                        if let TarEvent::EntryStart(h) = ev {
                            if let EntryKind::Symlink { .. } = h.kind {
                                assert!(h.path.starts_with("pg_tblspc/"), "{}", h.path);
                            }
                            paths.push(h.path);
                        }
                    }
                }
                BaseBackupEvent::ManifestStart => in_manifest = true,
                BaseBackupEvent::ManifestData(d) => {
                    assert!(in_manifest);
                    manifest.extend_from_slice(d);
                }
                BaseBackupEvent::Progress(p) => {
                    assert!(*p >= last_progress, "{name}: progress went back");
                    last_progress = *p;
                }
                _ => {}
            }
        }
        let (base_name, base, paths) = &archives[0];
        assert_eq!(base_name, "base.tar", "{name}");
        for must in ["PG_VERSION", "global/pg_control", "backup_label", "base"] {
            assert!(
                paths.iter().any(|p| p == must),
                "{name}: no {must} in base.tar"
            );
        }
        for (archive, parser, _) in &archives {
            // PostgreSQL ends every archive with the two zero blocks.
            assert!(
                parser.finish().is_ok(),
                "{name}: {archive} is not a complete tar"
            );
        }
        let _ = base;
        let m: serde_json::Value = serde_json::from_slice(&manifest)
            .unwrap_or_else(|e| panic!("{name}: manifest is not JSON: {e}"));
        // PostgreSQL 17 moved to manifest version 2, which adds the
        // cluster's System-Identifier.
        let major: u32 = name
            .trim_start_matches("base_backup/")
            .split('-')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no major version in the name"));
        if major >= 17 {
            assert_eq!(m["PostgreSQL-Backup-Manifest-Version"], 2, "{name}");
            assert!(m["System-Identifier"].is_u64(), "{name}");
        } else {
            assert_eq!(m["PostgreSQL-Backup-Manifest-Version"], 1, "{name}");
        }
        let ranges = m["WAL-Ranges"].as_array().expect("WAL-Ranges");
        assert_eq!(ranges[0]["Start-LSN"], start_lsn.to_string(), "{name}");
        assert_eq!(ranges[0]["Timeline"], *timeline, "{name}");
    }

    #[test]
    fn base_backup_fixtures() {
        let mut rng = fastrand::Rng::with_seed(13);
        let names = fixtures("base_backup");
        assert!(!names.is_empty(), "no base backup fixtures");
        for name in names {
            let bytes = fixture(&name);
            let (whole, end) = run(&name, &bytes, &[]);
            end.unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.contains("-error-") {
                assert!(
                    whole
                        .iter()
                        .any(|s| matches!(s, BaseBackupStep::ServerError(_))),
                    "{name}"
                );
                assert_eq!(whole.last(), Some(&BaseBackupStep::Done));
            } else {
                check_complete(&name, &whole);
            }
            // Byte at a time for the first MiB (and all of small fixtures),
            // random splits over the whole.
            let head = bytes.len().min(1 << 20);
            let (bytewise, _) = run(&name, &bytes[..head], &every_byte(head));
            let (head_whole, _) = run(&name, &bytes[..head], &[]);
            assert_eq!(bytewise, head_whole, "{name}: byte-at-a-time differs");
            for _ in 0..3 {
                let splits = random_splits(&mut rng, bytes.len(), 200);
                let (split, end) = run(&name, &bytes, &splits);
                end.unwrap();
                assert_eq!(split, whole, "{name}: random splits differ");
            }
            // A cut anywhere is an error at the end, never a panic.
            for _ in 0..20 {
                let cut = rng.usize(0..bytes.len());
                let (_, end) = run(&name, &bytes[..cut], &[]);
                assert!(end.is_err(), "{name}: cut at {cut} accepted");
            }
        }
    }

    #[test]
    fn corrupted_fixtures_never_panic() {
        let mut rng = fastrand::Rng::with_seed(17);
        for name in fixtures("base_backup") {
            let bytes = fixture(&name);
            let head = &bytes[..bytes.len().min(256 << 10)];
            for _ in 0..50 {
                let mut b = head.to_vec();
                for _ in 0..rng.usize(1..4) {
                    let i = rng.usize(0..b.len());
                    b[i] = rng.u8(..);
                }
                let _ = run(&name, &b, &random_splits(&mut rng, b.len(), 10));
            }
        }
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn row_description(names: &[&str]) -> Vec<u8> {
        let mut b = (names.len() as i16).to_be_bytes().to_vec();
        for n in names {
            b.extend_from_slice(n.as_bytes());
            b.push(0);
            b.extend_from_slice(&[0; 18]);
        }
        frame(b'T', &b)
    }

    fn data_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        frame(b'D', &b)
    }

    /// The 13–14 shape with a tablespace: archives are named and located
    /// from the tablespace list, then the manifest stream.
    #[test]
    fn old_shape_with_tablespace() {
        let mut s = Vec::new();
        s.extend(row_description(&["recptr", "tli"]));
        s.extend(data_row(&[Some("0/2000028"), Some("1")]));
        s.extend(frame(b'C', b"SELECT\0"));
        s.extend(row_description(&["spcoid", "spclocation", "size"]));
        s.extend(data_row(&[Some("16384"), Some("/srv/ts"), Some("2")]));
        s.extend(data_row(&[None, None, Some("30")]));
        s.extend(frame(b'C', b"SELECT\0"));
        for body in [&b"ts-tar"[..], b"base-tar", b"{}"] {
            s.extend(frame(b'H', &[0, 0, 0]));
            s.extend(frame(b'd', body));
            s.extend(frame(b'c', b""));
        }
        s.extend(row_description(&["recptr", "tli"]));
        s.extend(data_row(&[Some("0/2000100"), Some("1")]));
        s.extend(frame(b'C', b"SELECT\0"));
        s.extend(frame(b'Z', b"I"));
        let mut d = BaseBackupDecoder::new(Shape::TarPerTablespace);
        let (steps, rest) = feed(&s, &[], |b| d.decode(b));
        assert!(rest.unwrap().is_empty());
        let ev = |e| BaseBackupStep::Event(e);
        assert_eq!(
            steps,
            vec![
                ev(BaseBackupEvent::Started {
                    start_lsn: Lsn(0x2000028),
                    timeline: 1
                }),
                ev(BaseBackupEvent::Tablespaces(vec![
                    Tablespace {
                        oid: Some(16384),
                        location: Some("/srv/ts".into()),
                        size: Some(2048)
                    },
                    Tablespace {
                        oid: None,
                        location: None,
                        size: Some(30 * 1024)
                    },
                ])),
                ev(BaseBackupEvent::ArchiveStart {
                    name: "16384.tar".into(),
                    tablespace_location: Some("/srv/ts".into())
                }),
                ev(BaseBackupEvent::ArchiveData(Bytes::from_static(b"ts-tar"))),
                ev(BaseBackupEvent::ArchiveData(Bytes::from_static(
                    &TAR_END_OF_ARCHIVE
                ))),
                ev(BaseBackupEvent::ArchiveStart {
                    name: "base.tar".into(),
                    tablespace_location: None
                }),
                ev(BaseBackupEvent::ArchiveData(Bytes::from_static(
                    b"base-tar"
                ))),
                ev(BaseBackupEvent::ArchiveData(Bytes::from_static(
                    &TAR_END_OF_ARCHIVE
                ))),
                ev(BaseBackupEvent::ManifestStart),
                ev(BaseBackupEvent::ManifestData(Bytes::from_static(b"{}"))),
                ev(BaseBackupEvent::Finished {
                    end_lsn: Lsn(0x2000100),
                    timeline: 1
                }),
                BaseBackupStep::Done,
            ]
        );
        // Bytes after ReadyForQuery belong to the next command.
        let mut d = BaseBackupDecoder::new(Shape::TarPerTablespace);
        let mut buf = BytesMut::from(&s[..]);
        buf.extend_from_slice(b"next");
        while d.decode(&mut buf).unwrap().is_some() {}
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn tagged_messages_are_checked() {
        let mut d = BaseBackupDecoder::new(Shape::Tagged);
        let mut s = Vec::new();
        s.extend(row_description(&["recptr", "tli"]));
        s.extend(data_row(&[Some("0/2000028"), Some("1")]));
        s.extend(frame(b'C', b"SELECT\0"));
        s.extend(frame(b'H', &[0, 0, 0]));
        // Data before any archive was opened.
        s.extend(frame(b'd', b"dxyz"));
        let (_, rest) = feed(&s, &[], |b| d.decode(b));
        assert!(rest.is_err());
        for bad in [&b"n"[..], b"nname", b"p\x00\x01", b"x", b""] {
            let mut d = BaseBackupDecoder::new(Shape::Tagged);
            let mut s2 = s[..s.len() - frame(b'd', b"dxyz").len()].to_vec();
            s2.extend(frame(b'd', bad));
            let (_, rest) = feed(&s2, &[], |b| d.decode(b));
            assert!(rest.is_err(), "{bad:?}");
        }
    }
}
