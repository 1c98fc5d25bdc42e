//! Recovery settings for a restored data directory: `recovery.signal` and
//! the lines appended to `postgresql.auto.conf` (restore_command calling
//! `pgtide wal fetch`, the target, the action, the timeline). Pure text.

use super::select::Target;

/// Quote for /bin/sh: single quotes, `'` as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quote a postgresql.conf string value.
pub fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', "''"))
}

/// Every setting that names a recovery target; at most one may be non-empty.
pub const TARGET_SETTINGS: [&str; 5] = [
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
];

#[derive(Debug, Clone)]
pub struct RecoverySettings {
    pub pgtide_exe: String,
    pub repo_url: String,
    /// Key flags passed to `wal fetch` (encrypted repositories).
    pub secret_args: Vec<String>,
    pub target: Target,
    /// pause, promote or shutdown.
    pub action: String,
    /// `latest`, `current` or a timeline number.
    pub timeline: String,
    pub inclusive: bool,
}

impl RecoverySettings {
    pub fn restore_command(&self) -> String {
        let mut c = format!(
            "{} wal fetch --repo {}",
            shell_quote(&self.pgtide_exe),
            shell_quote(&self.repo_url)
        );
        for a in &self.secret_args {
            c.push(' ');
            c.push_str(&shell_quote(a));
        }
        c.push_str(" %f %p");
        c
    }

    /// The block appended to postgresql.auto.conf.
    pub fn conf(&self) -> String {
        let mut lines = vec![
            "# recovery settings written by pgtide restore".to_string(),
            format!("restore_command = {}", conf_quote(&self.restore_command())),
            format!("recovery_target_timeline = {}", conf_quote(&self.timeline)),
        ];
        // The backup's own postgresql.auto.conf may carry recovery settings
        // (a cluster that was itself restored by pgtide keeps them). Later
        // lines win, so clear every target this restore does not set: a stale
        // one would stop recovery at the old target.
        let ours = match &self.target {
            Target::End => None,
            Target::Time { .. } => Some("recovery_target_time"),
            Target::Lsn(_) => Some("recovery_target_lsn"),
            Target::Xid(_) => Some("recovery_target_xid"),
            Target::Name(_) => Some("recovery_target_name"),
            Target::Immediate => Some("recovery_target"),
        };
        for key in TARGET_SETTINGS {
            if Some(key) != ours {
                lines.push(format!("{key} = ''"));
            }
        }
        let mut targeted = true;
        match &self.target {
            Target::End => targeted = false,
            Target::Time { text, .. } => {
                lines.push(format!("recovery_target_time = {}", conf_quote(text)))
            }
            Target::Lsn(l) => lines.push(format!(
                "recovery_target_lsn = {}",
                conf_quote(&l.to_string())
            )),
            Target::Xid(x) => lines.push(format!("recovery_target_xid = {}", conf_quote(x))),
            Target::Name(n) => lines.push(format!("recovery_target_name = {}", conf_quote(n))),
            Target::Immediate => lines.push("recovery_target = 'immediate'".into()),
        }
        if targeted {
            lines.push(format!(
                "recovery_target_action = {}",
                conf_quote(&self.action)
            ));
            if !matches!(self.target, Target::Immediate) {
                lines.push(format!("recovery_target_inclusive = {}", self.inclusive));
            }
        }
        lines.join("\n") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_urls_with_ampersands_and_quotes() {
        let r = RecoverySettings {
            pgtide_exe: "/usr/bin/pgtide".into(),
            repo_url: "s3://b/p?endpoint=http://127.0.0.1:9000&region=x'y".into(),
            secret_args: vec!["--identity".into(), "/etc/pgtide/it's.key".into()],
            target: Target::Name("before upgrade".into()),
            action: "promote".into(),
            timeline: "latest".into(),
            inclusive: true,
        };
        assert_eq!(
            r.restore_command(),
            r"'/usr/bin/pgtide' wal fetch --repo 's3://b/p?endpoint=http://127.0.0.1:9000&region=x'\''y' '--identity' '/etc/pgtide/it'\''s.key' %f %p"
        );
        let conf = r.conf();
        assert!(conf.contains(r"restore_command = '''/usr/bin/pgtide'' wal fetch"));
        assert!(conf.contains("recovery_target_name = 'before upgrade'"));
        assert!(conf.contains("recovery_target_action = 'promote'"));
        assert!(conf.contains("recovery_target_time = ''"));
        assert!(!conf.contains("recovery_target_name = ''"));
        let end = RecoverySettings {
            target: Target::End,
            ..r
        };
        let end = end.conf();
        assert!(!end.contains("recovery_target_action"));
        // A stale target from the backup's postgresql.auto.conf is cleared.
        for key in TARGET_SETTINGS {
            assert!(end.contains(&format!("\n{key} = ''\n")), "{end}");
        }
    }
}
