//! The daemon's Prometheus metrics (text exposition format through the
//! `prometheus-client` crate). Gauges that mirror state (the stream's
//! position, the last runs) are refreshed from that state just before each
//! scrape, so this module only names and encodes numbers.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindResultLabel {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub last_success: Family<KindLabel, F64Gauge>,
    pub last_duration: Family<KindLabel, F64Gauge>,
    pub last_size: Family<KindLabel, Gauge>,
    pub runs: Family<KindResultLabel, Counter>,
    pub wal_archived_lsn: Gauge,
    pub wal_lag_bytes: Gauge,
    pub wal_lag_seconds: F64Gauge,
    pub wal_streaming: Gauge,
    pub slot_retained: Gauge,
    pub slot_over_warn: Gauge,
    pub slot_resets: Counter,
    pub storage_requests: Family<KindLabel, Counter>,
    pub storage_calls: Family<OpLabel, Counter>,
    pub storage_retries: Counter,
    pub repository_size: Gauge,
    pub expire_last_success: F64Gauge,
    pub drill_last_success: F64Gauge,
    pub up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            last_success: Family::default(),
            last_duration: Family::default(),
            last_size: Family::default(),
            runs: Family::default(),
            wal_archived_lsn: Gauge::default(),
            wal_lag_bytes: Gauge::default(),
            wal_lag_seconds: F64Gauge::default(),
            wal_streaming: Gauge::default(),
            slot_retained: Gauge::default(),
            slot_over_warn: Gauge::default(),
            slot_resets: Counter::default(),
            storage_requests: Family::default(),
            storage_calls: Family::default(),
            storage_retries: Counter::default(),
            repository_size: Gauge::default(),
            expire_last_success: F64Gauge::default(),
            drill_last_success: F64Gauge::default(),
            up: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "pgtide_backup_last_success_timestamp_seconds",
            "Unix time of the last successful backup (kind=full) or dump (kind=dump)",
            m.last_success.clone(),
        );
        r.register(
            "pgtide_backup_last_duration_seconds",
            "Duration of the last successful backup or dump",
            m.last_duration.clone(),
        );
        r.register(
            "pgtide_backup_last_size_bytes",
            "Bytes stored by the last successful backup or dump",
            m.last_size.clone(),
        );
        // The client appends _total to counters.
        r.register(
            "pgtide_backups",
            "Backups and dumps run by this daemon, by result",
            m.runs.clone(),
        );
        r.register(
            "pgtide_wal_archived_lsn",
            "The LSN up to which the repository holds the WAL (as a byte position)",
            m.wal_archived_lsn.clone(),
        );
        r.register(
            "pgtide_wal_archive_lag_bytes",
            "WAL the server has that the repository does not hold yet",
            m.wal_lag_bytes.clone(),
        );
        r.register(
            "pgtide_wal_archive_lag_seconds",
            "Seconds since the repository last held all the WAL the server had",
            m.wal_lag_seconds.clone(),
        );
        r.register(
            "pgtide_wal_streaming",
            "1 while a replication connection streams WAL into the repository",
            m.wal_streaming.clone(),
        );
        r.register(
            "pgtide_slot_retained_bytes",
            "WAL the server keeps for the replication slot (-1: unknown)",
            m.slot_retained.clone(),
        );
        r.register(
            "pgtide_slot_over_warn",
            "1 while the slot retains more than wal.slot_warn",
            m.slot_over_warn.clone(),
        );
        r.register(
            "pgtide_slot_resets",
            "Times the slot guard dropped and recreated the slot (each leaves a gap in the archive)",
            m.slot_resets.clone(),
        );
        r.register(
            "pgtide_storage_requests",
            "Storage requests sent to the store, by kind (put, get, list, head, delete; retries included)",
            m.storage_requests.clone(),
        );
        r.register(
            "pgtide_storage_calls",
            "Calls of the storage layer by operation (a multipart upload is one upload)",
            m.storage_calls.clone(),
        );
        r.register(
            "pgtide_storage_retries",
            "Storage requests sent again after a retryable failure",
            m.storage_retries.clone(),
        );
        r.register(
            "pgtide_repository_size_bytes",
            "Bytes stored in the repository (refreshed every few minutes)",
            m.repository_size.clone(),
        );
        r.register(
            "pgtide_expire_last_success_timestamp_seconds",
            "Unix time of the last successful retention run",
            m.expire_last_success.clone(),
        );
        r.register("pgtide_up", "1 while the daemon runs", m.up.clone());
        r.register(
            "pgtide_drill_last_success_timestamp_seconds",
            "Unix time of the last restore drill that passed",
            m.drill_last_success.clone(),
        );
        Metrics { registry: r, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn kind(kind: &str) -> KindLabel {
        KindLabel { kind: kind.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_issue_asks_for() {
        let m = Metrics::new();
        m.last_success
            .get_or_create(&Metrics::kind("full"))
            .set(1.5e9);
        m.runs
            .get_or_create(&KindResultLabel {
                kind: "full".into(),
                result: "success".into(),
            })
            .inc();
        m.storage_requests
            .get_or_create(&Metrics::kind("put"))
            .inc_by(3);
        m.storage_calls
            .get_or_create(&OpLabel {
                op: "upload".into(),
            })
            .inc_by(2);
        let text = m.encode();
        for name in [
            "pgtide_backup_last_success_timestamp_seconds{kind=\"full\"}",
            "pgtide_backups_total{kind=\"full\",result=\"success\"} 1",
            "pgtide_wal_archived_lsn",
            "pgtide_wal_archive_lag_bytes",
            "pgtide_wal_archive_lag_seconds",
            "pgtide_slot_retained_bytes",
            "pgtide_storage_requests_total{kind=\"put\"} 3",
            "pgtide_storage_calls_total{op=\"upload\"} 2",
            "pgtide_storage_retries",
            "pgtide_repository_size_bytes",
            "pgtide_drill_last_success_timestamp_seconds",
            "pgtide_expire_last_success_timestamp_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
