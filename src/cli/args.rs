//! The flags of each command (clap derive): what users type, before
//! `cli::run` maps them to a job's settings.

use super::*;

#[derive(Debug, Args)]
pub struct RepoOnly {
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// Dump or backup id (or `latest`: the newest of either)
    pub id: String,
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Dump or backup id
    #[arg(required_unless_present = "wal_before", conflicts_with = "wal_before")]
    pub id: Option<String>,
    /// Delete the archived WAL this backup and every newer one do not need
    /// (refused while an older backup still needs it)
    #[arg(long, value_name = "BACKUP_ID")]
    pub wal_before: Option<String>,
    #[command(flatten)]
    pub repo: RepoArg,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Dump or backup id (or `latest`: the newest of either)
    pub id: String,
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub secrets: keys::SecretArgs,
    /// Objects read in parallel
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// A dump or backup id, `latest` (the newest of either), or `all` (every complete one, and all the WAL)
    pub what: String,
    /// The repository to copy from (any location --repo takes)
    #[arg(long)]
    pub from: String,
    /// The repository to copy into: made a repository if empty; must hold the same cluster's backups
    #[arg(long)]
    pub to: String,
    /// Objects copied in parallel (each holds at most a few pieces of 8 MiB)
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Parallel COPY workers (each one more connection)
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
    /// Compression of stored chunks: none, zstd or zstd:LEVEL (1-22)
    #[arg(long, default_value = "zstd:1")]
    pub compress: Compression,
    /// Uncompressed bytes per chunk (memory ≈ chunk size × 4 per worker)
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Split tables larger than this into parts that restore loads in parallel (0: never)
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub split_size: u64,
    /// How to split: output (one scan per table, its output cut into parts;
    /// spares the source's cache) or ctid (block ranges read by several
    /// workers at once, PostgreSQL 14+; faster on many cores, fills shared_buffers)
    #[arg(long, value_enum, default_value_t = SplitByArg::Output)]
    pub split_by: SplitByArg,
    /// Row format: auto (binary COPY for tables whose columns are all
    /// built-in types with a portable binary form, in UTF8 databases; text
    /// for the rest) or text (every table, as pg_dump)
    #[arg(long, value_enum, default_value_t = CopyFormatArg::Auto)]
    pub copy_format: CopyFormatArg,
    /// Only the schema (pg_dump --schema-only in the snapshot)
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Only the data: rows, sequence values, large objects
    #[arg(long)]
    pub data_only: bool,
    #[command(flatten)]
    pub filter: TableFilter,
    /// A name recorded in the manifest
    #[arg(long)]
    pub name: Option<String>,
    /// A description recorded in the manifest
    #[arg(long)]
    pub description: Option<String>,
    /// pg_dump to use for the schema (binary or its directory) [default: the newest found]
    #[arg(long, env = "PGTIDE_PG_DUMP")]
    pub pg_dump: Option<PathBuf>,
    /// Give up waiting for a table lock after this long
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lock_wait_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Server to back up (a replication connection is made; the role needs REPLICATION)
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Compression of stored chunks: none, zstd or zstd:LEVEL (1-22)
    #[arg(long, default_value = "zstd:1")]
    pub compress: Compression,
    /// Chunks compressed in parallel
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
    /// Uncompressed bytes per chunk
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Checkpoint at the start: fast (immediate) or spread
    #[arg(long, value_enum, default_value_t = CheckpointArg::Fast)]
    pub checkpoint: CheckpointArg,
    /// Checksum algorithm of PostgreSQL's backup_manifest
    #[arg(long, value_enum, default_value_t = ManifestChecksumsArg::Crc32c)]
    pub manifest_checksums: ManifestChecksumsArg,
    /// Server-side rate limit, e.g. 100MiB (per second)
    #[arg(long, value_parser = parse_size)]
    pub max_rate: Option<u64>,
    /// Compress on the server before sending (PostgreSQL 15+): zstd or zstd:LEVEL
    #[arg(long)]
    pub server_compress: Option<String>,
    /// A name recorded in the manifest
    #[arg(long)]
    pub name: Option<String>,
    /// Where the backup's WAL comes from: stream (a temporary slot, default) or
    /// archive (wait for `wal stream` / archive_command to deliver it)
    #[arg(long, value_enum, default_value_t = WalSourceArg::Stream)]
    pub wal: WalSourceArg,
    /// With --wal archive: how long to wait for the WAL
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub wal_wait: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Server to stream from (replication connection)
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Physical replication slot to stream through
    #[arg(long, default_value = "pgtide")]
    pub slot: String,
    /// Create the slot if it does not exist
    #[arg(long)]
    pub create_slot: bool,
    /// Compression of stored segments
    #[arg(long, default_value = "zstd:1")]
    pub compress: Compression,
    /// Upload the new bytes of the current segment as a piece this often, e.g. 1s, 500ms (0 disables)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub partial_interval: std::time::Duration,
    /// Act as a synchronous standby: upload new WAL as soon as it arrives and report it flushed at once (with synchronous_standby_names naming --application-name, commits wait for the repository)
    #[arg(long)]
    pub synchronous: bool,
    /// application_name of the replication connection (what synchronous_standby_names lists)
    #[arg(long, default_value = "pgtide", value_parser = parse_application_name)]
    pub application_name: String,
    /// Send standby status updates at least this often
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub status_interval: std::time::Duration,
    /// Exit once WAL up to this LSN is archived
    #[arg(long)]
    pub stop_at: Option<crate::pg::lsn::Lsn>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Dump or backup id, or `latest` (the newest dump; with --pgdata, a --target-* or --database: the newest backup that reaches the target)
    pub id: String,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub secrets: keys::SecretArgs,
    /// Parallel COPY workers and pg_restore -j for indexes and constraints
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
    /// Create the database named by --db first (it must not exist)
    #[arg(long)]
    pub create: bool,
    /// Replace what is there: drop the dump's objects first (with --data-only: empty the tables)
    #[arg(long)]
    pub clean: bool,
    /// Only the schema
    #[arg(long, conflicts_with = "data_only")]
    pub schema_only: bool,
    /// Only the data, into existing tables
    #[arg(long)]
    pub data_only: bool,
    #[command(flatten)]
    pub filter: TableFilter,
    /// Check the dump and the target and say what would be done, changing nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not restore ownership (objects belong to the restoring user)
    #[arg(long)]
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE)
    #[arg(long)]
    pub no_privileges: bool,
    /// Put every object in the target's default tablespace (tablespaces the target lacks are always skipped, with a warning)
    #[arg(long)]
    pub no_tablespaces: bool,
    /// Build the indexes and keys of each table holding at least this much
    /// data as soon as it is loaded, while other tables still load (smaller
    /// tables get theirs in the final post-data pass) [default: 32MiB]
    #[arg(long, value_parser = parse_size)]
    pub early_index_size: Option<u64>,
    /// pg_dump whose pg_restore to use (binary or its directory) [default: the newest found]
    #[arg(long, env = "PGTIDE_PG_DUMP")]
    pub pg_dump: Option<PathBuf>,
    /// Restore a physical backup into this data directory (point-in-time restore)
    #[arg(long, help_heading = "Physical restore")]
    pub pgdata: Option<PathBuf>,
    /// Recover to this time (with a UTC offset, e.g. '2026-11-20 14:03:00+00')
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_time: Option<String>,
    /// Recover to this LSN
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_lsn: Option<crate::pg::lsn::Lsn>,
    /// Recover to this transaction id
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long, help_heading = "Physical restore", group = "target")]
    pub target_immediate: bool,
    /// What the server does at the target [default: promote]
    #[arg(long, help_heading = "Physical restore", value_enum)]
    pub target_action: Option<TargetActionArg>,
    /// Timeline to recover along: latest, current or a number [default: latest]
    #[arg(long, help_heading = "Physical restore")]
    pub target_timeline: Option<String>,
    /// Stop just before the target instead of just after it
    #[arg(long, help_heading = "Physical restore")]
    pub target_exclusive: bool,
    /// Replace the contents of a non-empty data or tablespace directory
    #[arg(long, help_heading = "Physical restore")]
    pub force: bool,
    /// Put tablespace OID (or original path) at DIR: OID=DIR; repeatable
    #[arg(long, help_heading = "Physical restore", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// Start the server and wait until recovery ends
    #[arg(long, help_heading = "Physical restore")]
    pub start: bool,
    /// Directory of pg_ctl for --start and for the scratch server of --table/--database [default: found by the backup's major version]
    #[arg(long, help_heading = "Physical restore")]
    pub pg_bin: Option<PathBuf>,
    /// When run as root: the OS user that owns the files and runs the server
    #[arg(long, help_heading = "Physical restore")]
    pub os_user: Option<String>,
    /// A server setting for the restored cluster, e.g. port=5433; repeatable
    #[arg(
        long = "set",
        help_heading = "Physical restore",
        value_name = "NAME=VALUE"
    )]
    pub settings: Vec<String>,
    /// From a backup: restore the --table tables into this schema of --db (created if missing) instead of their own
    #[arg(
        long,
        help_heading = "Tables or a database from a backup (--table / --database with --db)",
        value_name = "SCHEMA"
    )]
    pub into_schema: Option<String>,
    /// From a backup: the database of the backed-up cluster to read; alone, restore all of it as the database --db names (which must not exist, or --clean) [default for --table: the database --db names]
    #[arg(
        long,
        help_heading = "Tables or a database from a backup (--table / --database with --db)",
        value_name = "NAME"
    )]
    pub database: Option<String>,
    /// From a backup: where the scratch copy of the cluster goes [default: the temp dir]
    #[arg(
        long,
        help_heading = "Tables or a database from a backup (--table / --database with --db)",
        value_name = "DIR"
    )]
    pub scratch: Option<PathBuf>,
    /// From a backup: the backed-up cluster's superuser [default: the one its pg_authid names, postgres, the OS user]
    #[arg(
        long,
        help_heading = "Tables or a database from a backup (--table / --database with --db)",
        value_name = "ROLE"
    )]
    pub superuser: Option<String>,
}
