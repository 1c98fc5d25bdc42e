//! pgtide: a native PostgreSQL-protocol streaming backup engine.
//!
//! Bytes flow down, never back up:
//!
//! ```text
//! cli            parse flags + env + config, pick a job, print results (human or --json)
//! jobs           dump, restore, list, info, verify, delete
//! pg             connections (tokio-postgres), conninfo, catalog queries, pg_dump tools
//! pipeline       bounded stages: chunker → zstd → crc32 → packer, and the reader back
//! repo           repository format: layout, manifests, format version
//! storage        Storage trait; LocalFs and S3 drivers
//! ```

pub mod cli;
pub mod jobs;
pub mod pg;
pub mod pipeline;
pub mod repo;
pub mod storage;
pub mod units;
