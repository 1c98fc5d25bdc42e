//! The backend message layer of protocol 3.0: framing (`tag`, `i32` length,
//! body) and the messages a replication connection meets, decoded into
//! [`BackendMessage`].
//!
//! Owns: splitting the server's byte stream into messages and reading their
//! fields. Must never: read a socket, or hold more than one message beyond
//! what it was given (a message is taken out of the buffer only once it is
//! complete, and its body is a zero-copy slice of the buffer).

use bytes::{Buf, Bytes, BytesMut};

use super::{utf8, ProtoError, Reader};

/// The largest backend message pgtide accepts. The walsender sends XLogData
/// of at most 128 KiB and base-backup CopyData of a few tens of KiB; result
/// rows of replication commands are small. PostgreSQL's own limit for a
/// message is 1 GiB; anything near that from a replication connection is a
/// broken or hostile peer, and refusing it keeps memory bounded.
pub const MAX_MESSAGE_LEN: u32 = 64 << 20;

/// One backend message, split off the stream but not interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

/// Splits the next complete message off the front of `buf`, or `Ok(None)`
/// when `buf` does not yet hold one.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtoError::InvalidLength {
            tag: tag as char,
            len,
        });
    }
    if len > MAX_MESSAGE_LEN {
        return Err(ProtoError::MessageTooLarge {
            tag: tag as char,
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    let total = 1 + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total);
    frame.advance(5);
    Ok(Some(Frame {
        tag,
        body: frame.freeze(),
    }))
}

/// Decodes the next complete backend message in `buf`; `Ok(None)` = need more
/// bytes. The bytes of a message are consumed only when it is complete, so a
/// caller may read more and call again.
pub fn decode(buf: &mut BytesMut) -> Result<Option<BackendMessage>, ProtoError> {
    match decode_frame(buf)? {
        Some(frame) => BackendMessage::parse(frame).map(Some),
        None => Ok(None),
    }
}

/// What is left in `buf` when the stream ends: nothing, or a message that
/// was cut off.
pub fn finish(buf: &BytesMut) -> Result<(), ProtoError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(ProtoError::Truncated {
            what: "a backend message",
        })
    }
}

/// The fields of an ErrorResponse or NoticeResponse that pgtide uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// `ERROR`, `FATAL`, `PANIC`, `WARNING`, `NOTICE`, … (the non-localised
    /// `V` field when the server sends it, else `S`).
    pub severity: String,
    /// The SQLSTATE, e.g. `28P01`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorFields {
    fn parse(body: &[u8], what: &'static str) -> Result<ErrorFields, ProtoError> {
        let mut r = Reader::new(body, what);
        let mut f = ErrorFields::default();
        let mut localized_severity = String::new();
        loop {
            let kind = r.u8()?;
            if kind == 0 {
                break;
            }
            // Server text may be in the server's encoding: keep it readable
            // rather than refuse the whole error.
            let value = String::from_utf8_lossy(r.cstr()?).into_owned();
            match kind {
                b'S' => localized_severity = value,
                b'V' => f.severity = value,
                b'C' => f.code = value,
                b'M' => f.message = value,
                b'D' => f.detail = Some(value),
                b'H' => f.hint = Some(value),
                _ => {}
            }
        }
        if f.severity.is_empty() {
            f.severity = localized_severity;
        }
        Ok(f)
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// 0 = text, 1 = binary.
    pub format: i16,
}

/// The backend messages of a replication connection. Messages pgtide never
/// asks for (extended-query replies, notifications, function results) are
/// kept as [`BackendMessage::Other`] so a caller can refuse them with context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    AuthenticationOk,
    AuthenticationCleartextPassword,
    AuthenticationMd5Password {
        salt: [u8; 4],
    },
    /// The SASL mechanisms the server offers, e.g. `SCRAM-SHA-256`.
    AuthenticationSasl {
        mechanisms: Vec<String>,
    },
    AuthenticationSaslContinue(Bytes),
    AuthenticationSaslFinal(Bytes),
    /// Kerberos, GSSAPI, SSPI, …: the request code.
    AuthenticationOther(i32),
    ParameterStatus {
        name: String,
        value: String,
    },
    BackendKeyData {
        process_id: i32,
    },
    ReadyForQuery {
        status: u8,
    },
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    RowDescription(Vec<Column>),
    /// One row; `None` is SQL NULL. Values are zero-copy slices.
    DataRow(Vec<Option<Bytes>>),
    CommandComplete(String),
    EmptyQueryResponse,
    CopyOutResponse,
    CopyInResponse,
    CopyBothResponse,
    CopyData(Bytes),
    CopyDone,
    /// The server's newest protocol minor version, when it is older than
    /// asked for.
    NegotiateProtocolVersion {
        newest_minor: i32,
    },
    Other {
        tag: u8,
    },
}

impl BackendMessage {
    /// Interprets a frame.
    pub fn parse(frame: Frame) -> Result<BackendMessage, ProtoError> {
        let body = &frame.body[..];
        let msg = match frame.tag {
            b'R' => {
                let mut r = Reader::new(body, "authentication request");
                match r.i32()? {
                    0 => BackendMessage::AuthenticationOk,
                    3 => BackendMessage::AuthenticationCleartextPassword,
                    5 => {
                        let s = r.bytes(4)?;
                        BackendMessage::AuthenticationMd5Password {
                            salt: [s[0], s[1], s[2], s[3]],
                        }
                    }
                    10 => {
                        let mut mechanisms = Vec::new();
                        loop {
                            let m = r.cstr()?;
                            if m.is_empty() {
                                break;
                            }
                            mechanisms.push(utf8(m, "authentication request")?);
                        }
                        BackendMessage::AuthenticationSasl { mechanisms }
                    }
                    11 => BackendMessage::AuthenticationSaslContinue(frame.body.slice(4..)),
                    12 => BackendMessage::AuthenticationSaslFinal(frame.body.slice(4..)),
                    other => BackendMessage::AuthenticationOther(other),
                }
            }
            b'S' => {
                let mut r = Reader::new(body, "ParameterStatus");
                let name = r.string()?;
                let value = String::from_utf8_lossy(r.cstr()?).into_owned();
                BackendMessage::ParameterStatus { name, value }
            }
            b'K' => {
                let mut r = Reader::new(body, "BackendKeyData");
                BackendMessage::BackendKeyData {
                    process_id: r.i32()?,
                }
            }
            b'Z' => {
                let mut r = Reader::new(body, "ReadyForQuery");
                BackendMessage::ReadyForQuery { status: r.u8()? }
            }
            b'E' => BackendMessage::ErrorResponse(ErrorFields::parse(body, "ErrorResponse")?),
            b'N' => BackendMessage::NoticeResponse(ErrorFields::parse(body, "NoticeResponse")?),
            b'T' => {
                let mut r = Reader::new(body, "RowDescription");
                let n = r.i16()?;
                let n = usize::try_from(n)
                    .map_err(|_| ProtoError::malformed("RowDescription", "negative field count"))?;
                // Each field takes at least 19 bytes: refuse a count the body
                // cannot hold before allocating for it.
                if n > r.remaining() / 19 {
                    return Err(ProtoError::malformed(
                        "RowDescription",
                        format!("{n} fields do not fit in {} bytes", body.len()),
                    ));
                }
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.string()?;
                    let _table_oid = r.u32()?;
                    let _attnum = r.i16()?;
                    let type_oid = r.u32()?;
                    let _typlen = r.i16()?;
                    let _typmod = r.i32()?;
                    let format = r.i16()?;
                    columns.push(Column {
                        name,
                        type_oid,
                        format,
                    });
                }
                BackendMessage::RowDescription(columns)
            }
            b'D' => {
                let mut r = Reader::new(body, "DataRow");
                let n = r.i16()?;
                let n = usize::try_from(n)
                    .map_err(|_| ProtoError::malformed("DataRow", "negative column count"))?;
                if n > r.remaining() / 4 {
                    return Err(ProtoError::malformed(
                        "DataRow",
                        format!("{n} columns do not fit in {} bytes", body.len()),
                    ));
                }
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.i32()?;
                    if len < 0 {
                        values.push(None);
                        continue;
                    }
                    let start = r.position();
                    r.bytes(len as usize)?;
                    values.push(Some(frame.body.slice(start..start + len as usize)));
                }
                BackendMessage::DataRow(values)
            }
            b'C' => {
                let mut r = Reader::new(body, "CommandComplete");
                BackendMessage::CommandComplete(r.string()?)
            }
            b'I' => BackendMessage::EmptyQueryResponse,
            b'H' => BackendMessage::CopyOutResponse,
            b'G' => BackendMessage::CopyInResponse,
            b'W' => BackendMessage::CopyBothResponse,
            b'd' => BackendMessage::CopyData(frame.body),
            b'c' => BackendMessage::CopyDone,
            b'v' => {
                let mut r = Reader::new(body, "NegotiateProtocolVersion");
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor: r.i32()?,
                }
            }
            tag => BackendMessage::Other { tag },
        };
        Ok(msg)
    }

    /// A short name for messages and logs, e.g. `CopyData`.
    pub fn name(&self) -> String {
        match self {
            BackendMessage::AuthenticationOk => "AuthenticationOk".into(),
            BackendMessage::AuthenticationCleartextPassword => {
                "AuthenticationCleartextPassword".into()
            }
            BackendMessage::AuthenticationMd5Password { .. } => "AuthenticationMD5Password".into(),
            BackendMessage::AuthenticationSasl { .. } => "AuthenticationSASL".into(),
            BackendMessage::AuthenticationSaslContinue(_) => "AuthenticationSASLContinue".into(),
            BackendMessage::AuthenticationSaslFinal(_) => "AuthenticationSASLFinal".into(),
            BackendMessage::AuthenticationOther(code) => format!("authentication request {code}"),
            BackendMessage::ParameterStatus { .. } => "ParameterStatus".into(),
            BackendMessage::BackendKeyData { .. } => "BackendKeyData".into(),
            BackendMessage::ReadyForQuery { .. } => "ReadyForQuery".into(),
            BackendMessage::ErrorResponse(_) => "ErrorResponse".into(),
            BackendMessage::NoticeResponse(_) => "NoticeResponse".into(),
            BackendMessage::RowDescription(_) => "RowDescription".into(),
            BackendMessage::DataRow(_) => "DataRow".into(),
            BackendMessage::CommandComplete(_) => "CommandComplete".into(),
            BackendMessage::EmptyQueryResponse => "EmptyQueryResponse".into(),
            BackendMessage::CopyOutResponse => "CopyOutResponse".into(),
            BackendMessage::CopyInResponse => "CopyInResponse".into(),
            BackendMessage::CopyBothResponse => "CopyBothResponse".into(),
            BackendMessage::CopyData(_) => "CopyData".into(),
            BackendMessage::CopyDone => "CopyDone".into(),
            BackendMessage::NegotiateProtocolVersion { .. } => "NegotiateProtocolVersion".into(),
            BackendMessage::Other { tag } => format!("message of type {:?}", *tag as char),
        }
    }
}

/// A text-format column value as UTF-8.
pub fn text(value: &Option<Bytes>, what: &'static str) -> Result<Option<String>, ProtoError> {
    value.as_ref().map(|v| utf8(v, what)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::proto::testutil::{every_byte, feed, fixture, fixtures, random_splits};

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frames_need_whole_messages() {
        let bytes = frame(b'Z', b"I");
        let mut buf = BytesMut::from(&bytes[..3]);
        assert_eq!(decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&bytes[3..]);
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(BackendMessage::ReadyForQuery { status: b'I' })
        );
        assert!(buf.is_empty());
        assert!(finish(&buf).is_ok());
        let mut buf = BytesMut::from(&bytes[..5]);
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert!(finish(&buf).is_err());
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut buf = BytesMut::from(&[b'Z', 0, 0, 0, 3][..]);
        assert!(matches!(
            decode(&mut buf),
            Err(ProtoError::InvalidLength { len: 3, .. })
        ));
        let mut buf = BytesMut::from(&[b'd', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode(&mut buf),
            Err(ProtoError::MessageTooLarge { .. })
        ));
        // A DataRow claiming more columns than it has bytes for.
        let mut buf = BytesMut::from(&frame(b'D', &[0x7f, 0xff])[..]);
        assert!(decode(&mut buf).is_err());
        // A field longer than the message.
        let mut buf = BytesMut::from(&frame(b'D', &[0, 1, 0, 0, 0, 9, b'x'])[..]);
        assert!(decode(&mut buf).is_err());
        // An empty authentication request.
        let mut buf = BytesMut::from(&frame(b'R', &[])[..]);
        assert!(decode(&mut buf).is_err());
    }

    #[test]
    fn error_fields() {
        let body = b"SFATAL\0VFATAL\0C28000\0Mno pg_hba.conf entry\0Hfix it\0\0";
        let mut buf = BytesMut::from(&frame(b'E', body)[..]);
        let Some(BackendMessage::ErrorResponse(f)) = decode(&mut buf).unwrap() else {
            panic!("not an error")
        };
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.code, "28000");
        assert_eq!(f.message, "no pg_hba.conf entry");
        assert_eq!(f.hint.as_deref(), Some("fix it"));
    }

    /// Every fixture must frame into whole messages the same way, whatever
    /// the read boundaries.
    #[test]
    fn fixtures_frame_identically_at_any_split() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut names = Vec::new();
        for kind in ["auth", "replication", "base_backup"] {
            names.extend(fixtures(kind));
        }
        assert!(!names.is_empty(), "no fixtures found");
        for name in names {
            let bytes = fixture(&name);
            let (whole, rest) = feed(&bytes, &[], decode);
            let rest = rest.unwrap_or_else(|e| panic!("{name}: {e}"));
            // Some fixtures keep only the first messages of a stream and end
            // with a deliberately cut one: those are named "-truncated".
            if name.contains("-truncated") {
                assert!(finish(&rest).is_err(), "{name}");
            } else {
                assert!(rest.is_empty(), "{name}: {} bytes left over", rest.len());
            }
            // Byte at a time: whole small fixtures, the first MiB of the
            // base backups (tens of MiB; random splits cover the rest).
            let head = bytes.len().min(1 << 20);
            let (bytewise, _) = feed(&bytes[..head], &every_byte(head), decode);
            let (head_whole, _) = feed(&bytes[..head], &[], decode);
            assert_eq!(head_whole, bytewise, "{name}: byte-at-a-time differs");
            for _ in 0..4 {
                let splits = random_splits(&mut rng, bytes.len(), 50);
                let (split, _) = feed(&bytes, &splits, decode);
                assert_eq!(whole, split, "{name}: random splits differ");
            }
        }
    }

    /// The startup fixtures: the authentication exchange of each method,
    /// then the parameters and ReadyForQuery.
    #[test]
    fn auth_fixtures() {
        let names = fixtures("auth");
        assert!(names.len() >= 3);
        for name in names {
            let (msgs, rest) = feed(&fixture(&name), &[], decode);
            assert!(rest.unwrap().is_empty(), "{name}");
            let first = &msgs[0];
            if name.ends_with("-trust.bin") {
                assert_eq!(*first, BackendMessage::AuthenticationOk, "{name}");
            } else if name.ends_with("-md5.bin") {
                assert!(matches!(
                    first,
                    BackendMessage::AuthenticationMd5Password { .. }
                ));
                assert_eq!(msgs[1], BackendMessage::AuthenticationOk, "{name}");
            } else if name.ends_with("-scram.bin") {
                assert_eq!(
                    *first,
                    BackendMessage::AuthenticationSasl {
                        mechanisms: vec!["SCRAM-SHA-256".to_owned()]
                    },
                    "{name}"
                );
                let BackendMessage::AuthenticationSaslContinue(server_first) = &msgs[1] else {
                    panic!("{name}: {:?}", msgs[1])
                };
                assert!(server_first.starts_with(b"r="), "{name}");
                assert!(server_first.windows(7).any(|w| w == b",i=4096"), "{name}");
                let BackendMessage::AuthenticationSaslFinal(server_final) = &msgs[2] else {
                    panic!("{name}: {:?}", msgs[2])
                };
                assert!(server_final.starts_with(b"v="), "{name}");
                assert_eq!(msgs[3], BackendMessage::AuthenticationOk, "{name}");
            } else {
                panic!("{name}: unknown case");
            }
            let major = name.trim_start_matches("auth/").split('-').next().unwrap();
            let version = msgs.iter().find_map(|m| match m {
                BackendMessage::ParameterStatus { name, value } if name == "server_version" => {
                    Some(value.clone())
                }
                _ => None,
            });
            let version = version.unwrap_or_else(|| panic!("{name}: no server_version"));
            assert!(
                version.starts_with(&format!("{major}.")),
                "{name}: {version}"
            );
            assert!(msgs
                .iter()
                .any(|m| matches!(m, BackendMessage::BackendKeyData { .. })));
            assert_eq!(
                msgs.last(),
                Some(&BackendMessage::ReadyForQuery { status: b'I' }),
                "{name}"
            );
        }
    }

    /// IDENTIFY_SYSTEM: one row (systemid, timeline, xlogpos, dbname).
    #[test]
    fn identify_system_fixtures() {
        for name in fixtures("replication") {
            if !name.contains("identify-system") {
                continue;
            }
            let (msgs, rest) = feed(&fixture(&name), &[], decode);
            assert!(rest.unwrap().is_empty(), "{name}");
            let BackendMessage::RowDescription(cols) = &msgs[0] else {
                panic!("{name}")
            };
            let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(
                names,
                ["systemid", "timeline", "xlogpos", "dbname"],
                "{name}"
            );
            let BackendMessage::DataRow(row) = &msgs[1] else {
                panic!("{name}")
            };
            assert_eq!(row[1].as_deref(), Some(&b"2"[..]), "{name}");
            assert_eq!(row[3], None, "{name}: physical replication has no database");
            assert!(text(&row[2], "x").unwrap().unwrap().contains('/'));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..2000 {
            let len = rng.usize(0..200);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Make plausible headers common: a known tag and a small length.
            if len >= 5 && rng.bool() {
                bytes[0] = *rng.choice(b"RSKZENTDCIHGWdcv").unwrap();
                let l = rng.u32(0..(len as u32 + 8));
                bytes[1..5].copy_from_slice(&l.to_be_bytes());
            }
            let splits = random_splits(&mut rng, len, 3);
            let _ = feed(&bytes, &splits, decode);
        }
    }
}
