//! Replication commands answered by one result set: `IDENTIFY_SYSTEM`,
//! `SHOW`, `TIMELINE_HISTORY`, `CREATE_REPLICATION_SLOT`,
//! `DROP_REPLICATION_SLOT`, `READ_REPLICATION_SLOT`, and reading their rows.

use super::*;

impl WireClient {
    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, WireError> {
        let r = self.simple_query("IDENTIFY_SYSTEM", None).await?;
        let what = "IDENTIFY_SYSTEM result";
        let row = r.single_row(what)?;
        let system_identifier = text_at(row, 0, what)?;
        let timeline = text_at(row, 1, what)?;
        let timeline = timeline
            .parse()
            .map_err(|_| ProtoError::malformed(what, format!("timeline {timeline:?}")))?;
        let xlogpos = lsn_at(row, 2, what)?;
        Ok(SystemInfo {
            system_identifier,
            timeline,
            xlogpos,
        })
    }

    /// `SHOW setting`, e.g. `wal_segment_size` → `16MB` (see
    /// [`parse_size_setting`]).
    pub async fn show(&mut self, setting: &str) -> Result<String, WireError> {
        let plain = !setting.is_empty()
            && setting.split('.').all(|p| {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !plain {
            return Err(WireError::InvalidSetting {
                name: setting.to_owned(),
            });
        }
        let r = self.simple_query(&format!("SHOW {setting}"), None).await?;
        let what = "SHOW result";
        Ok(text_at(r.single_row(what)?, 0, what)?)
    }

    /// `TIMELINE_HISTORY tli`: the history file's name and its bytes.
    pub async fn timeline_history(&mut self, tli: u32) -> Result<(String, Bytes), WireError> {
        let r = self
            .simple_query(&format!("TIMELINE_HISTORY {tli}"), None)
            .await?;
        let what = "TIMELINE_HISTORY result";
        let row = r.single_row(what)?;
        let name = text_at(row, 0, what)?;
        let content = row
            .get(1)
            .cloned()
            .flatten()
            .ok_or_else(|| ProtoError::malformed(what, "no content"))?;
        Ok((name, content))
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] PHYSICAL [RESERVE_WAL]`.
    /// Returns an LSN from which the slot keeps WAL: with `reserve_wal` on
    /// PostgreSQL 15+ the slot's restart LSN (read back with
    /// `READ_REPLICATION_SLOT`); on 13/14, which cannot read a slot back, the
    /// server's WAL position right after creating it (`IDENTIFY_SYSTEM`),
    /// where all WAL written afterwards begins; without `reserve_wal` `None`
    /// (physical slots have no consistent point). A temporary slot is
    /// dropped when this connection closes.
    pub async fn create_physical_slot(
        &mut self,
        name: &str,
        temporary: bool,
        reserve_wal: bool,
    ) -> Result<Option<Lsn>, WireError> {
        check_slot_name(name)?;
        let mut sql = format!("CREATE_REPLICATION_SLOT {name}");
        if temporary {
            sql.push_str(" TEMPORARY");
        }
        sql.push_str(" PHYSICAL");
        if reserve_wal {
            if self.version.uses_new_replication_option_syntax() {
                sql.push_str(" (RESERVE_WAL)");
            } else {
                sql.push_str(" RESERVE_WAL");
            }
        }
        let r = self.simple_query(&sql, Some(name)).await?;
        let what = "CREATE_REPLICATION_SLOT result";
        let row = r.single_row(what)?;
        let consistent = match row.get(1).cloned().flatten() {
            Some(v) => Some(
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<Lsn>().ok())
                    .ok_or_else(|| ProtoError::malformed(what, "consistent_point"))?,
            ),
            None => None,
        };
        if let Some(lsn) = consistent.filter(|l| *l != Lsn::INVALID) {
            return Ok(Some(lsn));
        }
        if reserve_wal {
            if !self.version.has_read_replication_slot() {
                // PostgreSQL 13/14 cannot read the slot back over replication.
                // A physical slot reserves WAL from the last checkpoint's redo
                // LSN, which is at or before the server's WAL position now:
                // the slot keeps everything from that position on.
                return Ok(Some(self.identify_system().await?.xlogpos));
            }
            if let Some(info) = self.read_slot(name).await? {
                return Ok(info.restart_lsn);
            }
        }
        Ok(None)
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]`; with `wait`, waits for a process
    /// that uses the slot to let go instead of failing with `SlotInUse`.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), WireError> {
        check_slot_name(name)?;
        let sql = if wait {
            format!("DROP_REPLICATION_SLOT {name} WAIT")
        } else {
            format!("DROP_REPLICATION_SLOT {name}")
        };
        self.simple_query(&sql, Some(name)).await?;
        Ok(())
    }

    /// `READ_REPLICATION_SLOT name` (PostgreSQL 15+). `Ok(None)` when the
    /// slot does not exist, and always on older servers, which cannot say.
    pub async fn read_slot(&mut self, name: &str) -> Result<Option<SlotInfo>, WireError> {
        check_slot_name(name)?;
        if !self.version.has_read_replication_slot() {
            return Ok(None);
        }
        let r = self
            .simple_query(&format!("READ_REPLICATION_SLOT {name}"), Some(name))
            .await?;
        let what = "READ_REPLICATION_SLOT result";
        let row = r.single_row(what)?;
        if row.first().cloned().flatten().is_none() {
            return Ok(None);
        }
        let restart_lsn = match row.get(1).cloned().flatten() {
            Some(_) => Some(lsn_at(row, 1, what)?),
            None => None,
        };
        let restart_tli = match row.get(2).cloned().flatten() {
            Some(_) => {
                let t = text_at(row, 2, what)?;
                Some(
                    t.parse()
                        .map_err(|_| ProtoError::malformed(what, format!("timeline {t:?}")))?,
                )
            }
            None => None,
        };
        Ok(Some(SlotInfo {
            restart_lsn,
            restart_tli,
        }))
    }
}

/// The rows of a simple query.
#[derive(Debug, Default)]
pub(super) struct QueryResult {
    pub(super) rows: Vec<Vec<Option<Bytes>>>,
}

impl QueryResult {
    pub(super) fn single_row(&self, what: &'static str) -> Result<&[Option<Bytes>], ProtoError> {
        match self.rows.as_slice() {
            [row] => Ok(row),
            rows => Err(ProtoError::malformed(
                what,
                format!("{} rows, expected 1", rows.len()),
            )),
        }
    }
}

pub(super) fn text_at(
    row: &[Option<Bytes>],
    i: usize,
    what: &'static str,
) -> Result<String, ProtoError> {
    match row.get(i) {
        Some(v) => messages::text(v, what)?
            .ok_or_else(|| ProtoError::malformed(what, format!("column {} is NULL", i + 1))),
        None => Err(ProtoError::malformed(
            what,
            format!("{} columns, expected more than {i}", row.len()),
        )),
    }
}

pub(super) fn lsn_at(
    row: &[Option<Bytes>],
    i: usize,
    what: &'static str,
) -> Result<Lsn, ProtoError> {
    let t = text_at(row, i, what)?;
    t.parse()
        .map_err(|e: String| ProtoError::malformed(what, e))
}

/// PostgreSQL's rule for slot names (`ReplicationSlotValidateName`); it also
/// makes the name safe to put in a replication command unquoted.
pub(super) fn check_slot_name(name: &str) -> Result<(), WireError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(WireError::InvalidSlotName {
            slot: name.to_owned(),
        })
    }
}

/// Parses a memory-unit setting as `SHOW` prints it (`16MB`, `8kB`, `1GB`,
/// `8192`) into bytes. PostgreSQL's units are powers of 1024.
pub fn parse_size_setting(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_settings() {
        assert_eq!(parse_size_setting("16MB"), Some(16 << 20));
        assert_eq!(parse_size_setting("1GB"), Some(1 << 30));
        assert_eq!(parse_size_setting("8kB"), Some(8192));
        assert_eq!(parse_size_setting("8192"), Some(8192));
        assert_eq!(parse_size_setting("16 MB"), Some(16 << 20));
        assert_eq!(parse_size_setting("16mb"), None);
        assert_eq!(parse_size_setting("MB"), None);
        assert_eq!(parse_size_setting("99999999999999TB"), None);
    }

    #[test]
    fn slot_names() {
        assert!(check_slot_name("pgtide_1").is_ok());
        for bad in ["", "Upper", "a-b", "a b", "x;DROP", &"a".repeat(64)] {
            assert!(check_slot_name(bad).is_err(), "{bad}");
        }
    }
}
