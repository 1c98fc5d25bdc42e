//! The service: one long-lived process per cluster that runs the jobs the
//! CLI runs — `wal stream` continuously, backups and dumps on schedules,
//! retention after each success — and reports on them over HTTP.

pub mod config;
pub mod schedule;
