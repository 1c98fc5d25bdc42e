//! `BASE_BACKUP` in both shapes (PostgreSQL 15+ tagged CopyData, 13–14
//! one tar stream per tablespace): the command and its events.

use super::*;

impl WireClient {
    /// Sends `BASE_BACKUP` in the syntax the server takes; then call
    /// [`base_backup_next`](Self::base_backup_next) until it returns
    /// `Ok(None)`. Errors the server reports (e.g. wal_level) arrive there.
    pub async fn base_backup(&mut self, opts: &BaseBackupOptions) -> Result<(), WireError> {
        self.ready("start a base backup")?;
        if self.version.major() < 13 {
            return Err(WireError::Unsupported {
                feature: "a base backup with a backup manifest",
                needs_major: 13,
                version: self.version,
            });
        }
        if opts.server_compression.is_some() && !self.version.has_server_side_compression() {
            return Err(WireError::Unsupported {
                feature: "server-side compression",
                needs_major: 15,
                version: self.version,
            });
        }
        let (sql, shape) = base_backup_command(opts, self.version);
        frontend::query(&sql, &mut self.wbuf).map_err(|e| self.settings_error(e))?;
        self.send().await?;
        self.mode = Mode::BaseBackup {
            decoder: Box::new(BaseBackupDecoder::new(shape)),
            error: None,
        };
        Ok(())
    }

    /// The next event of the base backup; `Ok(None)` once it is complete and
    /// the connection is back in command mode.
    pub async fn base_backup_next(&mut self) -> Result<Option<BaseBackupEvent>, WireError> {
        loop {
            let step = match &mut self.mode {
                Mode::BaseBackup { decoder, .. } => decoder.decode(&mut self.rbuf),
                Mode::Idle => return Ok(None),
                _ => return Err(self.busy("receive a base backup")),
            };
            match step {
                Ok(Some(BaseBackupStep::Event(e))) => return Ok(Some(e)),
                Ok(Some(BaseBackupStep::Notice(n))) => self.notice(&n),
                Ok(Some(BaseBackupStep::ServerError(e))) => {
                    if let Mode::BaseBackup { error, .. } = &mut self.mode {
                        error.get_or_insert(Box::new(e));
                    }
                }
                Ok(Some(BaseBackupStep::Done)) => {
                    let mode = std::mem::replace(&mut self.mode, Mode::Idle);
                    if let Mode::BaseBackup { error: Some(e), .. } = mode {
                        return Err(self.command_error(*e, None));
                    }
                    return Ok(None);
                }
                Ok(None) => self.fill().await?,
                Err(e) => return Err(self.protocol(e)),
            }
        }
    }
}

/// The `BASE_BACKUP` command for `version`, and the answer's shape.
pub(super) fn base_backup_command(
    opts: &BaseBackupOptions,
    version: ServerVersion,
) -> (String, Shape) {
    let label = quote_literal(&opts.label);
    if version.uses_new_base_backup_syntax() {
        let mut o = vec![format!("LABEL {label}")];
        if opts.progress {
            o.push("PROGRESS".to_owned());
        }
        if opts.fast_checkpoint {
            o.push("CHECKPOINT 'fast'".to_owned());
        }
        if opts.wal {
            o.push("WAL".to_owned());
        }
        if !opts.wait_for_wal_archive {
            o.push("WAIT 0".to_owned());
        }
        if let Some(rate) = opts.max_rate_kbps {
            o.push(format!("MAX_RATE {rate}"));
        }
        o.push("MANIFEST 'yes'".to_owned());
        if let Some(c) = &opts.manifest_checksums {
            o.push(format!("MANIFEST_CHECKSUMS {}", quote_literal(c)));
        }
        if let Some(c) = &opts.server_compression {
            let (method, detail) = match c.split_once(':') {
                Some((m, d)) => (m, Some(d)),
                None => (c.as_str(), None),
            };
            o.push(format!("COMPRESSION {}", quote_literal(method)));
            if let Some(d) = detail.filter(|d| !d.is_empty()) {
                o.push(format!("COMPRESSION_DETAIL {}", quote_literal(d)));
            }
        }
        (format!("BASE_BACKUP ({})", o.join(", ")), Shape::Tagged)
    } else {
        let mut sql = format!("BASE_BACKUP LABEL {label}");
        if opts.progress {
            sql.push_str(" PROGRESS");
        }
        if opts.fast_checkpoint {
            sql.push_str(" FAST");
        }
        if opts.wal {
            sql.push_str(" WAL");
        }
        if !opts.wait_for_wal_archive {
            sql.push_str(" NOWAIT");
        }
        if let Some(rate) = opts.max_rate_kbps {
            sql.push_str(&format!(" MAX_RATE {rate}"));
        }
        sql.push_str(" MANIFEST 'yes'");
        if let Some(c) = &opts.manifest_checksums {
            sql.push_str(&format!(" MANIFEST_CHECKSUMS {}", quote_literal(c)));
        }
        (sql, Shape::TarPerTablespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_backup_commands() {
        let opts = BaseBackupOptions {
            label: "it's".into(),
            fast_checkpoint: true,
            manifest_checksums: Some("SHA256".into()),
            max_rate_kbps: Some(1024),
            server_compression: Some("zstd:level=1".into()),
            progress: true,
            ..BaseBackupOptions::default()
        };
        let (sql, shape) = base_backup_command(&opts, ServerVersion(150004));
        assert_eq!(shape, Shape::Tagged);
        assert_eq!(
            sql,
            "BASE_BACKUP (LABEL 'it''s', PROGRESS, CHECKPOINT 'fast', WAIT 0, MAX_RATE 1024, MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256', COMPRESSION 'zstd', COMPRESSION_DETAIL 'level=1')"
        );
        let opts = BaseBackupOptions {
            server_compression: None,
            ..opts
        };
        let (sql, shape) = base_backup_command(&opts, ServerVersion(140010));
        assert_eq!(shape, Shape::TarPerTablespace);
        assert_eq!(
            sql,
            "BASE_BACKUP LABEL 'it''s' PROGRESS FAST NOWAIT MAX_RATE 1024 MANIFEST 'yes' MANIFEST_CHECKSUMS 'SHA256'"
        );
    }
}
