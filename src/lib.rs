//! pgtide: a native PostgreSQL-protocol streaming backup engine: parallel
//! logical dumps and restores, physical base backups, continuous WAL
//! archiving and point-in-time restore, all through one chunk pipeline into
//! a local or S3 repository.
//!
//! Bytes flow down, never back up (docs: `DESIGN.md` §1, docs/FORMAT.md):
//!
//! ```text
//! cli       parse flags + environment, run a job, print its result (human or
//!           --json, documented in cli/output.rs); exit codes in cli/exit.rs
//! jobs      dump, restore (logical), backup, pitr (physical restore), wal
//!           (stream, push, fetch), verify, inspect (list, info, delete)
//! pg        PostgreSQL: conninfo (libpq rules), sessions on tokio-postgres,
//!           pgtide's own wire client (replication, base backups, the dump's
//!           COPY sessions), sans-I/O decoders (proto: messages, replication
//!           stream, base backup, tar, COPY, timeline history; copy_binary;
//!           walpage), catalog queries, pg_dump / pg_restore, LSNs, versions
//! pipeline  bounded stages: chunker → zstd → crc32 → packer, and the reader
//!           back (ranged reads, checks, decompression)
//! repo      the repository format: object layout, manifests and their format
//!           versions, the WAL archive, the cluster binding
//! storage   the Storage trait (contracts per method); LocalFs and S3 drivers
//! chunk     leaf: plain types of stored chunks (compression, chunk and pack
//!           references) and the pure codec of one frame, for pipeline and repo
//! units     leaf: sizes as flags and URL parameters take them
//! ```

pub mod chunk;
pub mod cli;
pub mod crypt;
pub mod daemon;
pub mod jobs;
pub mod pg;
pub mod pipeline;
pub mod repo;
pub mod storage;
pub mod units;
