//! The CopyData payloads of physical streaming replication
//! (`START_REPLICATION … PHYSICAL`): the walsender's XLogData (`w`) and
//! primary keepalive (`k`) messages, and the client's standby status update
//! (`r`).
//!
//! Owns: the byte layout of these payloads and PostgreSQL's timestamp epoch.
//! Must never: read a socket or decide when to reply (that is the I/O shell
//! and the WAL job).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::{ProtoError, Reader};
use crate::pg::lsn::Lsn;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// A time as PostgreSQL sends it on the wire: microseconds since
/// 2000-01-01 00:00:00 UTC (`TimestampTz`).
pub fn to_pg_timestamp(t: SystemTime) -> i64 {
    let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    match t.duration_since(pg_epoch) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The inverse of [`to_pg_timestamp`]; `None` when out of `SystemTime`'s range.
pub fn from_pg_timestamp(micros: i64) -> Option<SystemTime> {
    let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    let d = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        pg_epoch.checked_add(d)
    } else {
        pg_epoch.checked_sub(d)
    }
}

/// One message of the walsender, from a CopyData payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalMessage {
    /// WAL bytes `data` that start at `start`. `end` is the server's current
    /// end of WAL (its flush position), not the end of `data`.
    XLogData {
        start: Lsn,
        end: Lsn,
        /// Microseconds since 2000-01-01 (see [`from_pg_timestamp`]).
        send_time: i64,
        data: Bytes,
    },
    /// The server's current end of WAL; answer at once when
    /// `reply_requested`, or the server drops the connection after
    /// `wal_sender_timeout`.
    Keepalive {
        end: Lsn,
        send_time: i64,
        reply_requested: bool,
    },
}

/// Decodes one CopyData payload of a physical replication stream. The
/// payload is complete (CopyData framing already delimits it), so there is
/// no "need more bytes" here; `data` is a zero-copy slice of `payload`.
pub fn decode(payload: &Bytes) -> Result<WalMessage, ProtoError> {
    let Some(&tag) = payload.first() else {
        return Err(ProtoError::malformed(
            "replication CopyData",
            "empty message",
        ));
    };
    match tag {
        b'w' => {
            let mut r = Reader::new(&payload[1..], "XLogData");
            let start = Lsn(r.u64()?);
            let end = Lsn(r.u64()?);
            let send_time = r.i64()?;
            Ok(WalMessage::XLogData {
                start,
                end,
                send_time,
                data: payload.slice(25..),
            })
        }
        b'k' => {
            let mut r = Reader::new(&payload[1..], "primary keepalive");
            let end = Lsn(r.u64()?);
            let send_time = r.i64()?;
            let reply_requested = r.u8()? != 0;
            Ok(WalMessage::Keepalive {
                end,
                send_time,
                reply_requested,
            })
        }
        other => Err(ProtoError::Unexpected {
            got: format!("replication message of type {:?}", other as char),
            during: "streaming WAL",
        }),
    }
}

/// A standby status update (`r`): what the client has written, flushed
/// (made durable) and applied. The walsender frees WAL of a slot up to
/// `flush`, so it must never be more than is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatus {
    pub write: Lsn,
    pub flush: Lsn,
    pub apply: Lsn,
    /// Microseconds since 2000-01-01 ([`to_pg_timestamp`]).
    pub client_time: i64,
    /// Ask the server to answer with a keepalive at once.
    pub reply_requested: bool,
}

impl StandbyStatus {
    /// Appends the CopyData payload (not the CopyData framing) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(34);
        buf.put_u8(b'r');
        buf.put_u64(self.write.0);
        buf.put_u64(self.flush.0);
        buf.put_u64(self.apply.0);
        buf.put_i64(self.client_time);
        buf.put_u8(u8::from(self.reply_requested));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::proto::messages::{self, BackendMessage};
    use crate::pg::proto::testutil::{every_byte, feed, fixture, fixtures, random_splits};

    #[test]
    fn xlogdata_and_keepalive() {
        let mut p = vec![b'w'];
        p.extend_from_slice(&0x1_0000_0028u64.to_be_bytes());
        p.extend_from_slice(&0x1_0000_0100u64.to_be_bytes());
        p.extend_from_slice(&5i64.to_be_bytes());
        p.extend_from_slice(b"wal!");
        let m = decode(&Bytes::from(p)).unwrap();
        assert_eq!(
            m,
            WalMessage::XLogData {
                start: Lsn(0x1_0000_0028),
                end: Lsn(0x1_0000_0100),
                send_time: 5,
                data: Bytes::from_static(b"wal!"),
            }
        );
        let mut p = vec![b'k'];
        p.extend_from_slice(&7u64.to_be_bytes());
        p.extend_from_slice(&(-1i64).to_be_bytes());
        p.push(1);
        assert_eq!(
            decode(&Bytes::from(p.clone())).unwrap(),
            WalMessage::Keepalive {
                end: Lsn(7),
                send_time: -1,
                reply_requested: true
            }
        );
        // Every shorter prefix is an error, never a panic.
        for n in 0..p.len() {
            assert!(decode(&Bytes::copy_from_slice(&p[..n])).is_err(), "{n}");
        }
        assert!(decode(&Bytes::from_static(b"w")).is_err());
        assert!(decode(&Bytes::from_static(b"x123")).is_err());
    }

    #[test]
    fn status_update_layout() {
        let mut buf = BytesMut::new();
        StandbyStatus {
            write: Lsn(1),
            flush: Lsn(2),
            apply: Lsn(3),
            client_time: 4,
            reply_requested: true,
        }
        .encode(&mut buf);
        let mut want = vec![b'r'];
        for v in [1u64, 2, 3, 4] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        want.push(1);
        assert_eq!(&buf[..], &want[..]);
    }

    #[test]
    fn pg_epoch() {
        let t = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS + 1);
        assert_eq!(to_pg_timestamp(t), 1_000_000);
        assert_eq!(from_pg_timestamp(1_000_000), Some(t));
        assert_eq!(to_pg_timestamp(UNIX_EPOCH), -946_684_800_000_000);
        assert_eq!(from_pg_timestamp(-946_684_800_000_000), Some(UNIX_EPOCH));
    }

    /// What a replication fixture decodes to: each backend message, with the
    /// CopyData payloads decoded as walsender messages.
    #[derive(Debug, PartialEq)]
    enum Item {
        Wal(WalMessage),
        Msg(BackendMessage),
    }

    fn decode_stream(buf: &mut BytesMut) -> Result<Option<Item>, ProtoError> {
        Ok(match messages::decode(buf)? {
            Some(BackendMessage::CopyData(p)) => Some(Item::Wal(decode(&p)?)),
            Some(m) => Some(Item::Msg(m)),
            None => None,
        })
    }

    fn summarize(items: &[Item]) -> (usize, usize, Lsn) {
        let mut x = 0;
        let mut k = 0;
        let mut last_end = Lsn(0);
        for item in items {
            match item {
                Item::Wal(WalMessage::XLogData { start, data, .. }) => {
                    // XLogData must be contiguous.
                    if x > 0 {
                        assert_eq!(*start, last_end, "gap in the WAL stream");
                    }
                    last_end = Lsn(start.0 + data.len() as u64);
                    x += 1;
                }
                Item::Wal(WalMessage::Keepalive { .. }) => k += 1,
                Item::Msg(_) => {}
            }
        }
        (x, k, last_end)
    }

    #[test]
    fn replication_fixtures_decode_identically_at_any_split() {
        let mut rng = fastrand::Rng::with_seed(11);
        let names = fixtures("replication");
        assert!(!names.is_empty(), "no replication fixtures");
        for name in names {
            let bytes = fixture(&name);
            let (whole, rest) = feed(&bytes, &[], decode_stream);
            let rest = rest.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(rest.is_empty(), "{name}: cut off");
            if name.contains("-stream-inserts") {
                assert!(
                    matches!(
                        whole.first(),
                        Some(Item::Msg(BackendMessage::CopyBothResponse))
                    ),
                    "{name}: starts with {:?}",
                    whole.first()
                );
                let (x, k, _) = summarize(&whole);
                assert!(x >= 2, "{name}: {x} XLogData");
                assert!(k >= 1, "{name}: no keepalive");
            }
            if name.contains("-timeline-end") {
                // CopyBoth, WAL up to the switch point, CopyDone, then the
                // next timeline as a one-row result.
                assert!(whole
                    .iter()
                    .any(|i| *i == Item::Msg(BackendMessage::CopyDone)));
                let row = whole.iter().find_map(|i| match i {
                    Item::Msg(BackendMessage::DataRow(r)) => Some(r.clone()),
                    _ => None,
                });
                let row = row.unwrap_or_else(|| panic!("{name}: no next-timeline row"));
                assert_eq!(row.len(), 2, "{name}");
                assert_eq!(row[0].as_deref(), Some(&b"2"[..]), "{name}");
            }
            let (bytewise, _) = feed(&bytes, &every_byte(bytes.len()), decode_stream);
            assert_eq!(whole, bytewise, "{name}");
            let splits = random_splits(&mut rng, bytes.len(), 40);
            let (split, _) = feed(&bytes, &splits, decode_stream);
            assert_eq!(whole, split, "{name}");
            // Cut anywhere: an error or a cut-off message, never a panic.
            for _ in 0..20 {
                let cut = rng.usize(0..bytes.len());
                let (_, rest) = feed(&bytes[..cut], &[], decode_stream);
                if let Ok(rest) = rest {
                    let complete = messages::finish(&rest).is_ok();
                    // Only a cut at a message boundary leaves nothing over.
                    if complete {
                        let (prefix, _) = feed(&bytes[..cut], &[], decode_stream);
                        assert!(prefix.len() < whole.len(), "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..5000 {
            let len = rng.usize(0..40);
            let mut p: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if len > 0 {
                p[0] = *rng.choice(b"wkr?").unwrap();
            }
            let _ = decode(&Bytes::from(p));
        }
    }
}
