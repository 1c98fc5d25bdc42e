//! The WAL steps' set-up: their slots, made before a burst of WAL written
//! into the scratch database, and dropped after.

use super::*;

impl Bench {
    /// Creates the WAL steps' slots (reserving WAL at once), then writes
    /// about `bytes` of WAL into the scratch database; the steps archive
    /// from the slots' start to the burst's end.
    pub async fn wal_burst(&mut self, bytes: u64) -> Result<(), BenchError> {
        self.drop_slots().await;
        if !self.wal_db_made {
            self.drop_database(WAL_DB).await?;
            self.execute(&format!("CREATE DATABASE {}", quote_ident(WAL_DB)))
                .await?;
            self.wal_db_made = true;
        }
        let mut start: Option<Lsn> = None;
        for slot in [steps::WAL_SLOT_PGTIDE, steps::WAL_SLOT_RECEIVEWAL] {
            let row = self
                .admin
                .query_one(
                    &format!(
                        "SELECT lsn::text FROM pg_create_physical_replication_slot({}, true)",
                        quote_literal(slot)
                    ),
                    &[],
                )
                .await
                .map_err(sql_err(format!("create replication slot {slot}")))?;
            let lsn: Option<String> = row.get(0);
            let lsn = lsn.and_then(|l| l.parse::<Lsn>().ok());
            start = match (start, lsn) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let c = session(&self.conn.with_dbname(WAL_DB)).await?;
        // About 140 bytes of WAL per row of this shape.
        let rows = (bytes / 140).max(1);
        c.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS burst (id bigint, pad text); TRUNCATE burst; \
             INSERT INTO burst SELECT g, repeat('x', 100) FROM generate_series(1, {rows}) g"
        ))
        .await
        .map_err(sql_err("write the WAL burst"))?;
        // Close the segment: the steps stop at the start of the next one,
        // a complete segment in both archives (not a partial one that
        // pgtide uploads only every --partial-interval).
        let switched: Lsn = one_text(&c, "SELECT pg_switch_wal()::text")
            .await?
            .parse()
            .map_err(|_| BenchError::Usage("the server's WAL position does not parse".into()))?;
        let seg = self.wal_segment_size;
        let end = if switched.segment_start(seg) == switched {
            switched
        } else {
            Lsn(switched.segment_start(seg).0 + seg)
        };
        let from = start.map_or(end, |s| s.segment_start(self.wal_segment_size));
        self.wal_bytes = end.0.saturating_sub(from.0);
        self.wal_end = Some(end);
        Ok(())
    }

    /// After the WAL steps: their slots and the burst's database go.
    pub async fn wal_done(&mut self) -> Result<(), BenchError> {
        self.drop_slots().await;
        self.drop_database(WAL_DB).await?;
        self.wal_db_made = false;
        Ok(())
    }

    /// Drops the bench's slots, if there.
    pub async fn drop_slots(&self) {
        for slot in [steps::WAL_SLOT_PGTIDE, steps::WAL_SLOT_RECEIVEWAL] {
            let sql = format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}",
                quote_literal(slot)
            );
            if let Err(e) = self.admin.batch_execute(&sql).await {
                // Handled here: a slot left behind holds WAL; say so.
                tracing::warn!("could not drop replication slot {slot}: {e}");
            }
        }
    }
}
