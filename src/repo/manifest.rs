//! Manifest types: what a dump holds and where each byte is. Written last,
//! as JSON, once every pack it names is durable. A reader refuses a manifest
//! whose `format_version` it does not know. The format is specified in
//! docs/FORMAT.md; change both together.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkRef, Compression, PackInfo, StreamInfo};

/// The repository version (`pgtide.json`), and the manifest version of
/// backups and of dumps that need nothing newer (docs/FORMAT.md,
/// "Versions").
pub const FORMAT_VERSION: u32 = 1;

/// Version of a dump manifest with tables in binary COPY format
/// (`TableEntry::binary`): readers that only know version 1 must refuse it
/// rather than load binary rows as text.
pub const FORMAT_VERSION_BINARY_COPY: u32 = 2;

/// Version of a dump manifest whose sequences name their owning table as
/// separate identifiers (`OwnedBy::Table`): readers of versions 1 and 2
/// expect a string there.
pub const FORMAT_VERSION_OWNED_BY_TABLE: u32 = 3;

/// The newest format version this reader understands.
pub const NEWEST_READABLE_VERSION: u32 = FORMAT_VERSION_OWNED_BY_TABLE;

/// The lowest format version that holds what a dump uses, so that older
/// readers refuse only the dumps they would misread.
pub fn dump_format_version(tables: &[TableEntry], sequences: &[SequenceEntry]) -> u32 {
    if sequences.iter().any(|q| q.owned_by.is_some()) {
        FORMAT_VERSION_OWNED_BY_TABLE
    } else if tables.iter().any(|t| t.binary) {
        FORMAT_VERSION_BINARY_COPY
    } else {
        FORMAT_VERSION
    }
}

/// A byte stream stored as chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRef {
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: Vec<ChunkRef>,
}

impl From<StreamInfo> for StreamRef {
    fn from(s: StreamInfo) -> Self {
        StreamRef {
            raw_bytes: s.raw_bytes,
            stored_bytes: s.stored_bytes,
            chunks: s.chunks,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `server_version` as the server reports it.
    pub server_version: String,
    pub server_version_num: u32,
    pub database: String,
    /// user@host:port/db, never a password.
    pub connection: String,
    pub system_identifier: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// The exported snapshot every row was read in.
    pub snapshot: String,
    /// `datlocprovider` as a word: `libc`, `icu` or `builtin`. Absent for
    /// sources older than PostgreSQL 15 (always libc) and for dumps written
    /// before pgtide recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale_provider: Option<String>,
    /// The ICU or builtin locale (`daticulocale` on 15–16, `datlocale` on
    /// 17+) when the provider is not libc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// `daticurules` (16+), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icu_rules: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpOptions {
    pub compression: Compression,
    pub chunk_size: u64,
    pub jobs: u32,
    pub schema_only: bool,
    pub data_only: bool,
    pub tables: Vec<String>,
    pub exclude_tables: Vec<String>,
    pub split_threshold: u64,
}

/// The `pg_dump -Fc --schema-only` archive taken in the dump's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaArchive {
    pub pg_dump_version: String,
    pub stream: StreamRef,
}

/// A block range `[start, end)` of a table split by ctid; `end = None` is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtidRange {
    pub start: u32,
    pub end: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablePart {
    pub ctid: Option<CtidRange>,
    pub rows: u64,
    pub stream: StreamRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// Column names (unquoted) in COPY order: no generated or dropped columns.
    pub columns: Vec<String>,
    /// Size of the main fork when the dump started.
    pub relation_bytes: u64,
    /// Row filter for extension configuration tables (`pg_extension_config_dump`).
    pub filter: Option<String>,
    /// Names of indexes on the table (for selective restore).
    pub indexes: Vec<String>,
    /// The parts hold binary COPY tuples (`pg::copy_binary`) without the
    /// file header and trailer, instead of COPY text; rows in UTF8.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
    /// For binary tables: each column's type OID (domains resolved to their
    /// base type; built-in types only, whose OIDs are the same everywhere),
    /// checked against the target before loading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_types: Vec<u32>,
    pub parts: Vec<TablePart>,
}

impl TableEntry {
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.rows).sum()
    }
    pub fn raw_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.stream.raw_bytes).sum()
    }
    pub fn stored_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.stream.stored_bytes).sum()
    }
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceEntry {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
    /// The table owning this sequence (identity/serial), if any.
    pub owned_by: Option<OwnedBy>,
}

/// The table that owns a sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OwnedBy {
    /// Format version 3 on: `{"schema": …, "table": …}`, names as they are.
    Table { schema: String, table: String },
    /// Versions 1 and 2: `"schema.table"`, unquoted, so ambiguous when a
    /// name holds a dot. Read, never written.
    Joined(String),
}

impl OwnedBy {
    /// True when the owner is table `schema`.`table`.
    pub fn is(&self, schema: &str, table: &str) -> bool {
        match self {
            OwnedBy::Table {
                schema: s,
                table: t,
            } => s == schema && t == table,
            OwnedBy::Joined(j) => {
                j.len() == schema.len() + 1 + table.len()
                    && j.starts_with(schema)
                    && j[schema.len()..].starts_with('.')
                    && j.ends_with(table)
            }
        }
    }
}

/// One privilege granted on an object (a large object or the database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoGrant {
    /// Role name; `None` is PUBLIC.
    pub grantee: Option<String>,
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeObjectEntry {
    pub oid: u32,
    pub owner: String,
    /// `None` when the object has default privileges.
    pub grants: Option<Vec<LoGrant>>,
    pub comment: Option<String>,
    pub size: u64,
}

/// Large objects: their metadata, and their contents concatenated in
/// `items` order in one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeObjects {
    pub items: Vec<LargeObjectEntry>,
    pub stream: StreamRef,
}

/// Properties of the source database that `pg_dump --create` carries and
/// `restore --create` applies to the database it creates. Dumps written
/// before pgtide recorded them read as the default: nothing to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseProperties {
    /// Owner role (`datdba`).
    #[serde(default)]
    pub owner: Option<String>,
    /// `COMMENT ON DATABASE`.
    #[serde(default)]
    pub comment: Option<String>,
    /// `ALTER DATABASE … SET` settings (`pg_db_role_setting` with
    /// `setrole = 0`), as the server stores them: `name=value`, in order.
    #[serde(default)]
    pub settings: Vec<String>,
    /// `datconnlimit` when it is not -1 (no limit).
    #[serde(default)]
    pub connection_limit: Option<i32>,
    #[serde(default)]
    pub is_template: bool,
    /// `None` when the database has default privileges (`datacl` is NULL),
    /// else every grant in ACL order.
    #[serde(default)]
    pub grants: Option<Vec<LoGrant>>,
}

/// The encoding of the table streams of dumps that do not record one:
/// pgtide took every dump in UTF8 until `data_encoding` existed.
pub fn legacy_data_encoding() -> String {
    "UTF8".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatviewEntry {
    pub schema: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DumpStats {
    pub tables: u64,
    pub rows: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpManifest {
    pub format_version: u32,
    pub kind: String,
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub pgtide_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub source: SourceInfo,
    pub options: DumpOptions,
    pub compression: Compression,
    /// Encoding of the COPY text in the table streams: the source database's
    /// own (`source.encoding`), as pg_dump does. Absent in older manifests,
    /// whose streams are UTF8.
    #[serde(default = "legacy_data_encoding")]
    pub data_encoding: String,
    /// What `restore --create` applies to the database it creates.
    #[serde(default)]
    pub database: DatabaseProperties,
    pub schema: Option<SchemaArchive>,
    pub tables: Vec<TableEntry>,
    pub sequences: Vec<SequenceEntry>,
    pub large_objects: LargeObjects,
    /// Materialized views to refresh: populated in the source and reading
    /// (also through views) no unpopulated matview of the dump, as pg_dump
    /// decides; in an order where each comes after every matview it reads.
    pub matviews: Vec<MatviewEntry>,
    pub packs: Vec<PackInfo>,
    pub stats: DumpStats,
}

pub const KIND_DUMP: &str = "dump";

/// Only the fields needed to decide whether a manifest can be read at all.
#[derive(Debug, Deserialize)]
pub struct ManifestHeader {
    pub format_version: u32,
    pub kind: String,
}

impl DumpManifest {
    /// Every stream in the dump (schema, table parts, large objects), for verify.
    pub fn streams(&self) -> Vec<(String, &StreamRef)> {
        let mut out = Vec::new();
        if let Some(s) = &self.schema {
            out.push(("schema archive".to_string(), &s.stream));
        }
        for t in &self.tables {
            for (i, p) in t.parts.iter().enumerate() {
                let what = if t.parts.len() > 1 {
                    format!("table {} part {}", t.qualified(), i + 1)
                } else {
                    format!("table {}", t.qualified())
                };
                out.push((what, &p.stream));
            }
        }
        if !self.large_objects.items.is_empty() {
            out.push(("large objects".to_string(), &self.large_objects.stream));
        }
        out
    }
}

pub const KIND_BACKUP: &str = "backup";

/// One entry of a base backup's tar archives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// `None` for the main data directory, else the tablespace oid.
    pub tablespace: Option<u32>,
    /// Path inside the archive (relative, `/`-separated).
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub mode: u32,
    pub mtime: i64,
    pub size: u64,
    /// Symlink target.
    pub target: Option<String>,
    /// Contents, for files.
    pub stream: Option<StreamRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceEntry {
    pub oid: u32,
    /// Where it lived on the source server.
    pub location: String,
}

/// A physical base backup. It is restorable with the WAL from the
/// `wal_start` segment through the `wal_end` segment (both included) on
/// `timeline`, which the backup does not call complete until the archive
/// holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format_version: u32,
    pub kind: String,
    pub id: String,
    pub label: String,
    pub name: Option<String>,
    pub pgtide_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub system_identifier: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub wal_segment_size: u64,
    pub timeline: u32,
    pub start_lsn: crate::pg::lsn::Lsn,
    pub end_lsn: crate::pg::lsn::Lsn,
    pub end_timeline: u32,
    /// First and last WAL segment names the backup needs.
    pub wal_start: String,
    pub wal_end: String,
    pub compression: Compression,
    pub chunk_size: u64,
    pub tablespaces: Vec<TablespaceEntry>,
    pub files: Vec<BackupFile>,
    /// PostgreSQL's own `backup_manifest`, also stored as a plain object.
    pub pg_backup_manifest: Option<StreamRef>,
    pub packs: Vec<PackInfo>,
    pub stats: DumpStats,
}

impl BackupManifest {
    pub fn streams(&self) -> Vec<(String, &StreamRef)> {
        let mut out: Vec<(String, &StreamRef)> = self
            .files
            .iter()
            .filter_map(|f| {
                let name = match f.tablespace {
                    None => f.path.clone(),
                    Some(oid) => format!("tablespace {oid}: {}", f.path),
                };
                f.stream.as_ref().map(|s| (name, s))
            })
            .collect();
        if let Some(s) = &self.pg_backup_manifest {
            out.push(("backup_manifest".into(), s));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump manifest as pgtide wrote it before it recorded encodings and
    /// database properties.
    const OLD_DUMP: &str = r#"{
        "format_version": 1, "kind": "dump", "id": "20260101-000000D",
        "name": null, "description": null, "pgtide_version": "0.1.0",
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
        "source": {"server_version": "15.18", "server_version_num": 150018,
                   "database": "src", "connection": "postgres@localhost:5432/src",
                   "system_identifier": "", "encoding": "LATIN1", "collate": "C",
                   "ctype": "C", "snapshot": "00000003-00000002-1"},
        "options": {"compression": "none", "chunk_size": 4194304, "jobs": 1,
                    "schema_only": false, "data_only": false, "tables": [],
                    "exclude_tables": [], "split_threshold": 0},
        "compression": "none", "schema": null, "tables": [], "sequences": [],
        "large_objects": {"items": [], "stream": {"raw_bytes": 0, "stored_bytes": 0, "chunks": []}},
        "matviews": [], "packs": [],
        "stats": {"tables": 0, "rows": 0, "raw_bytes": 0, "stored_bytes": 0, "seconds": 1.0}
    }"#;

    #[test]
    fn older_dump_manifests_read_as_utf8_data_and_no_properties() {
        let m: DumpManifest = serde_json::from_str(OLD_DUMP).unwrap();
        // Older pgtide copied every table with client_encoding UTF8, whatever
        // the source database's encoding.
        assert_eq!(m.data_encoding, "UTF8");
        assert_eq!(m.source.encoding, "LATIN1");
        assert_eq!(m.source.locale_provider, None);
        assert_eq!(m.database, DatabaseProperties::default());
        // And the new fields survive a round trip.
        let mut m2 = m.clone();
        m2.data_encoding = "SQL_ASCII".into();
        m2.source.locale_provider = Some("icu".into());
        m2.source.locale = Some("und".into());
        m2.database.settings = vec!["work_mem=7MB".into()];
        m2.database.connection_limit = Some(3);
        let back: DumpManifest =
            serde_json::from_str(&serde_json::to_string(&m2).unwrap()).unwrap();
        assert_eq!(back, m2);
    }

    #[test]
    fn a_dump_records_the_lowest_version_that_holds_it() {
        let table = |binary| TableEntry {
            oid: 1,
            schema: "s".into(),
            name: "t".into(),
            columns: vec![],
            relation_bytes: 0,
            filter: None,
            indexes: vec![],
            binary,
            column_types: vec![],
            parts: vec![],
        };
        let seq = |owned_by| SequenceEntry {
            schema: "s".into(),
            name: "q".into(),
            last_value: 1,
            is_called: false,
            owned_by,
        };
        let owner = || {
            Some(OwnedBy::Table {
                schema: "s".into(),
                table: "t".into(),
            })
        };
        assert_eq!(dump_format_version(&[table(false)], &[seq(None)]), 1);
        assert_eq!(dump_format_version(&[table(true)], &[seq(None)]), 2);
        assert_eq!(dump_format_version(&[table(false)], &[seq(owner())]), 3);
        assert_eq!(dump_format_version(&[table(true)], &[seq(owner())]), 3);
    }

    #[test]
    fn sequence_owners_read_in_both_shapes() {
        let old: SequenceEntry = serde_json::from_str(
            r#"{"schema": "s", "name": "q", "last_value": 1, "is_called": true, "owned_by": "a.b.c"}"#,
        )
        .unwrap();
        let owner = old.owned_by.unwrap();
        assert!(owner.is("a", "b.c") && owner.is("a.b", "c") && !owner.is("a", "b"));
        let new: SequenceEntry = serde_json::from_str(
            r#"{"schema": "s", "name": "q", "last_value": 1, "is_called": true, "owned_by": {"schema": "a.b", "table": "c"}}"#,
        )
        .unwrap();
        let owner = new.owned_by.clone().unwrap();
        assert!(owner.is("a.b", "c") && !owner.is("a", "b.c"));
        assert!(serde_json::to_string(&new)
            .unwrap()
            .contains(r#""owned_by":{"schema":"a.b","table":"c"}"#));
        let none: SequenceEntry = serde_json::from_str(
            r#"{"schema": "s", "name": "q", "last_value": 1, "is_called": true, "owned_by": null}"#,
        )
        .unwrap();
        assert_eq!(none.owned_by, None);
    }
}
