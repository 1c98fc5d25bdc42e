//! Test harness: real PostgreSQL clusters, real S3-compatible servers and
//! Azure/GCS emulators, the built binary, and the round-trip oracles.
#![allow(dead_code)]

pub mod cli;
pub mod cut;
pub mod emulators;
pub mod oracle;
pub mod pg;
pub mod s3;
