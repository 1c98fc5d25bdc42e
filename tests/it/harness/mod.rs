//! Test harness: real PostgreSQL clusters, a real S3-compatible server, the
//! built binary, and the round-trip oracles.
#![allow(dead_code)]

pub mod cli;
pub mod cut;
pub mod oracle;
pub mod pg;
pub mod s3;
