//! The one integration-test binary: every test starts real servers
//! (PostgreSQL via initdb, S3-compatible servers, Azurite and
//! fake-gcs-server on 127.0.0.1), except
//! `packaging`, which checks the packaging files against the code.

mod harness;

mod bench;
mod cloud;
mod daemon;
mod drill;
mod dump_load;
mod encodings;
mod encryption;
mod errors;
mod expire;
mod json;
mod object_lock;
mod object_lock_azure;
mod object_lock_gcs;
mod packaging;
mod physical_errors;
mod pitr;
mod realworld;
mod realworld_physical;
mod requests;
mod stopping;
mod storage_conformance;
mod table_pitr;
mod versions;
mod wal_faults;
mod wal_fetch;
mod wal_pieces;
