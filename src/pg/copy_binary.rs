//! COPY's binary format, where pgtide uses it instead of text: which column
//! types may travel in it, and the framing of the stream (file header, one
//! tuple per CopyData message, trailer).
//!
//! Owns: the list of types whose binary representation is the same in every
//! PostgreSQL version pgtide reads or writes (13 to 18) and carries no
//! object identifier of the source database, and the checks on the
//! server's binary COPY output. Must never: touch a socket (callers hand
//! over each CopyData payload).
//!
//! Why binary: the server spends most of a restore's CPU parsing text
//! (`int4in`, `numeric_in`, hex bytea, …) and much of a dump's producing
//! it; binary COPY skips that work (measured in docs/BENCHMARKS.md).
//! Why only some types: a binary array carries its element type's OID and a
//! binary record its column types' OIDs, which differ between databases for
//! user-defined types (enums, composites, domains in arrays), and extension
//! types may lack binary I/O or change it between versions. Text stays the
//! format for every table with any other column type.

use super::version::ServerVersion;

/// `PGCOPY\n\377\r\n\0`, then flags (int32 0: no OIDs) and the header
/// extension length (int32 0): what COPY … FROM STDIN (FORMAT binary) must
/// receive first.
pub const HEADER: [u8; 19] = [
    b'P', b'G', b'C', b'O', b'P', b'Y', b'\n', 0xff, b'\r', b'\n', 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The file trailer: a tuple field count of -1.
pub const TRAILER: [u8; 2] = [0xff, 0xff];

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Built-in types (fixed OIDs, the same in every version) whose send/receive
/// format has not changed since PostgreSQL 9.4 and holds no OIDs: booleans,
/// integers, floats, numeric, character types (sent in the client
/// encoding, UTF8 here), bytea, date/time types, uuid, json and jsonb,
/// network addresses, bit strings, and arrays of these (a built-in element
/// OID is the same in every database). Left out: money (its meaning depends
/// on `lc_monetary`). `interval` ([`INTERVAL_TYPES`]) only from servers
/// without infinite intervals: a 13–16 server's `interval_recv` would take
/// the infinities of 17+ as huge finite intervals, where text input
/// refuses them.
const SAFE_TYPES: &[u32] = &[
    16,   // bool
    17,   // bytea
    18,   // "char"
    19,   // name
    20,   // int8
    21,   // int2
    23,   // int4
    25,   // text
    26,   // oid
    114,  // json
    650,  // cidr
    700,  // float4
    701,  // float8
    774,  // macaddr8
    829,  // macaddr
    869,  // inet
    1042, // bpchar
    1043, // varchar
    1082, // date
    1083, // time
    1114, // timestamp
    1184, // timestamptz
    1266, // timetz
    1560, // bit
    1562, // varbit
    1700, // numeric
    2950, // uuid
    3802, // jsonb
    // Arrays of the above.
    199,  // json[]
    651,  // cidr[]
    775,  // macaddr8[]
    1000, // bool[]
    1001, // bytea[]
    1002, // "char"[]
    1003, // name[]
    1005, // int2[]
    1007, // int4[]
    1009, // text[]
    1014, // bpchar[]
    1015, // varchar[]
    1016, // int8[]
    1021, // float4[]
    1022, // float8[]
    1028, // oid[]
    1040, // macaddr[]
    1041, // inet[]
    1115, // timestamp[]
    1182, // date[]
    1183, // time[]
    1185, // timestamptz[]
    1231, // numeric[]
    1270, // timetz[]
    1561, // bit[]
    1563, // varbit[]
    2951, // uuid[]
    3807, // jsonb[]
];

/// `interval` and `interval[]`.
const INTERVAL_TYPES: &[u32] = &[1186, 1187];

/// True when a table whose COPY columns have these types (domains already
/// resolved to their base type) can be dumped from a server of `version`
/// and restored anywhere in binary. Tables without columns stay in text.
pub fn safe_for_binary(column_types: &[u32], version: ServerVersion) -> bool {
    let interval_ok = !version.has_infinite_interval();
    !column_types.is_empty()
        && column_types
            .iter()
            .all(|t| SAFE_TYPES.contains(t) || (interval_ok && INTERVAL_TYPES.contains(t)))
}

/// What one CopyData message of a binary COPY TO stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// One tuple: the bytes to store (the header already cut off).
    Tuple(&'a [u8]),
    /// The trailer: the stream is over.
    Trailer,
    /// Nothing to store (a header arriving alone).
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("binary COPY output does not start with the PGCOPY signature")]
    BadSignature,
    #[error("binary COPY output has header flags {0:#x} (pgtide asked for no OIDs)")]
    BadFlags(u32),
    #[error("binary COPY output has a message of {len} bytes that is not one tuple of {columns} columns")]
    NotATuple { len: usize, columns: usize },
    #[error("binary COPY output goes on after its trailer")]
    AfterTrailer,
}

/// Checks the messages of one binary `COPY … TO STDOUT` as they arrive: the
/// first carries the file header, then every message is one tuple starting
/// with its field count (the server sends one tuple per message), and the
/// last is the trailer. Only what a tuple message starts with is looked at,
/// so this costs nothing per byte.
#[derive(Debug)]
pub struct OutputFraming {
    columns: i16,
    seen_header: bool,
    ended: bool,
    tuples: u64,
}

impl OutputFraming {
    pub fn new(columns: usize) -> OutputFraming {
        OutputFraming {
            columns: i16::try_from(columns).unwrap_or(i16::MAX),
            seen_header: false,
            ended: false,
            tuples: 0,
        }
    }

    /// Tuples seen so far.
    pub fn tuples(&self) -> u64 {
        self.tuples
    }

    /// Whether the trailer has arrived.
    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn next<'a>(&mut self, mut msg: &'a [u8]) -> Result<Message<'a>, FramingError> {
        if self.ended {
            return Err(FramingError::AfterTrailer);
        }
        if !self.seen_header {
            if msg.len() < HEADER.len() || &msg[..SIGNATURE.len()] != SIGNATURE {
                return Err(FramingError::BadSignature);
            }
            let word = |o: usize| u32::from_be_bytes(msg[o..o + 4].try_into().expect("4 bytes"));
            let flags = word(11);
            if flags != 0 {
                return Err(FramingError::BadFlags(flags));
            }
            let ext = word(15) as usize;
            if msg.len() < HEADER.len() + ext {
                return Err(FramingError::BadSignature);
            }
            msg = &msg[HEADER.len() + ext..];
            self.seen_header = true;
            if msg.is_empty() {
                return Ok(Message::Empty);
            }
        }
        if msg == TRAILER {
            self.ended = true;
            return Ok(Message::Trailer);
        }
        if msg.len() < 2 || i16::from_be_bytes([msg[0], msg[1]]) != self.columns {
            return Err(FramingError::NotATuple {
                len: msg.len(),
                columns: self.columns as usize,
            });
        }
        self.tuples += 1;
        Ok(Message::Tuple(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(cols: i16, payload: &[u8]) -> Vec<u8> {
        let mut v = cols.to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_tuples_trailer() {
        let mut f = OutputFraming::new(2);
        let mut first = HEADER.to_vec();
        first.extend(tuple(2, b"\0\0\0\x01a\xff\xff\xff\xff"));
        let t = tuple(2, b"\0\0\0\x01a\xff\xff\xff\xff");
        assert_eq!(f.next(&first).unwrap(), Message::Tuple(&t[..]));
        assert_eq!(f.next(&t).unwrap(), Message::Tuple(&t[..]));
        assert_eq!(f.tuples(), 2);
        assert_eq!(f.next(&TRAILER).unwrap(), Message::Trailer);
        assert!(f.ended());
        assert_eq!(f.next(&t), Err(FramingError::AfterTrailer));
    }

    #[test]
    fn empty_table_and_header_alone() {
        let mut f = OutputFraming::new(3);
        let mut only = HEADER.to_vec();
        only.extend_from_slice(&TRAILER);
        assert_eq!(f.next(&only).unwrap(), Message::Trailer);
        assert_eq!(f.tuples(), 0);
        let mut f = OutputFraming::new(3);
        assert_eq!(f.next(&HEADER).unwrap(), Message::Empty);
        // A header extension is skipped.
        let mut f = OutputFraming::new(1);
        let mut ext = HEADER.to_vec();
        ext[18] = 3;
        ext.extend_from_slice(b"xyz");
        ext.extend(tuple(1, b"\xff\xff\xff\xff"));
        assert!(matches!(f.next(&ext).unwrap(), Message::Tuple(_)));
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut f = OutputFraming::new(2);
        assert_eq!(f.next(b"PGCOPY"), Err(FramingError::BadSignature));
        let mut f = OutputFraming::new(2);
        let mut oids = HEADER.to_vec();
        oids[13] = 1;
        assert_eq!(f.next(&oids), Err(FramingError::BadFlags(0x100)));
        let mut f = OutputFraming::new(2);
        f.next(&HEADER).unwrap();
        assert!(matches!(
            f.next(&tuple(3, b"")),
            Err(FramingError::NotATuple { .. })
        ));
        assert!(matches!(
            f.next(b"\x00"),
            Err(FramingError::NotATuple { .. })
        ));
        let mut f = OutputFraming::new(2);
        let mut short_ext = HEADER.to_vec();
        short_ext[18] = 9;
        assert_eq!(f.next(&short_ext), Err(FramingError::BadSignature));
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let mut f = OutputFraming::new(rng.usize(0..4));
            for _ in 0..3 {
                let len = rng.usize(0..30);
                let msg: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                let _ = f.next(&msg);
            }
        }
    }

    #[test]
    fn safe_types() {
        let v15 = ServerVersion(150_000);
        assert!(safe_for_binary(&[23, 1042, 25, 1700, 3802, 1009], v15));
        // An enum (user OID), money, a record, no columns.
        assert!(!safe_for_binary(&[23, 16_500], v15));
        assert!(!safe_for_binary(&[790], v15));
        assert!(!safe_for_binary(&[2249], v15));
        assert!(!safe_for_binary(&[], v15));
        // Intervals: only from servers without infinite ones.
        assert!(safe_for_binary(&[1186, 1187], v15));
        assert!(!safe_for_binary(&[1186], ServerVersion(170_000)));
        assert!(!safe_for_binary(&[23, 1187], ServerVersion(180_001)));
    }
}
