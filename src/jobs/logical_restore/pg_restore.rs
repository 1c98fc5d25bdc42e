//! Running pg_restore: the schema archive written to a temporary file, the
//! command line, and the SQL script path for servers older than the tool's
//! (statements they cannot run removed, the script's encoding honoured).

use super::*;

/// A temporary file removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn new(suffix: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!(
            "pgtide-{}-{:016x}{suffix}",
            std::process::id(),
            fastrand::u64(..)
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// pg_restore needs a seekable file for -j: materialize the schema archive.
pub(super) async fn write_archive(
    repo: &Repository,
    m: &DumpManifest,
    stream: &crate::repo::manifest::StreamRef,
    prefetch: usize,
) -> Result<TempFile, JobError> {
    let tmp = TempFile::new(".dump");
    let io = |e| JobError::Io {
        context: format!("write {}", tmp.path().display()),
        source: e,
    };
    // Created here, not on the blocking pool: a restore that stops drops
    // `tmp`, which must find the file to remove it.
    let mut f = tokio::fs::File::from_std(std::fs::File::create(tmp.path()).map_err(io)?);
    let reader = ChunkReader::new(
        repo.storage().clone(),
        Arc::new(m.packs.clone()),
        m.compression,
        prefetch,
    )
    .with_cipher(repo.set_cipher(crate::repo::SetKind::Dump, &m.id)?);
    let mut chunks = reader.stream(stream.chunks.clone());
    while let Some(c) = chunks.next().await {
        let c = c.map_err(JobError::pipeline("read the schema archive"))?;
        f.write_all(&c).await.map_err(io)?;
    }
    f.flush().await.map_err(io)?;
    Ok(tmp)
}

/// How pg_restore runs against the target: the same for every section and
/// for the drop phase of `--clean`.
pub(crate) struct PgRestore<'a> {
    pub tools: &'a PgTools,
    /// The schema archive, as a file.
    pub archive: &'a Path,
    pub conn: &'a ConnInfo,
    pub no_owner: bool,
    pub no_privileges: bool,
    /// Every object in the target's default tablespace.
    pub no_tablespaces: bool,
    /// The target, and its version (older servers get a script instead).
    pub target: &'a Client,
    pub version: ServerVersion,
    /// The archive's encoding (of the scripts pg_restore writes).
    pub encoding: &'a str,
}

impl PgRestore<'_> {
    /// The pg_restore command with the options every run shares.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.tools.pg_restore);
        cmd.arg("--no-password");
        if self.no_owner {
            cmd.arg("--no-owner");
        }
        if self.no_privileges {
            cmd.arg("--no-privileges");
        }
        if self.no_tablespaces {
            cmd.arg("--no-tablespaces");
        }
        if let Some(pw) = &self.conn.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd
    }

    /// Run one section of the schema archive (the entries of `list`, or
    /// all) into the target. A pg_restore of 17 or later always sends `SET
    /// transaction_timeout`, which older servers reject: for those,
    /// pg_restore writes the section as a script, and pgtide runs it over
    /// its own connection (in one transaction, without the settings the
    /// server does not know).
    pub async fn section(
        &self,
        section: &str,
        list: Option<&Path>,
        jobs: usize,
    ) -> Result<(), JobError> {
        let t = self.tools;
        let mut cmd = self.command();
        cmd.arg(format!("--section={section}"));
        if let Some(l) = list {
            cmd.arg("--use-list").arg(l);
        }
        if t.major >= 17 && !self.version.has_transaction_timeout() {
            cmd.arg("--file=-").arg(self.archive);
            let script = tools::output("pg_restore", cmd).await?;
            let script = script_text(self.target, script, self.encoding, &t.pg_dump).await?;
            let script = script_for_server(&script, self.version);
            return self
                .target
                .batch_execute(&script)
                .await
                .map_err(JobError::sql(format!("restore {section}")));
        }
        cmd.arg("--exit-on-error")
            .arg(format!("--jobs={}", jobs.max(1)))
            .arg("--dbname")
            .arg(self.conn.to_libpq_string())
            .arg(self.archive);
        tools::run("pg_restore", cmd).await?;
        Ok(())
    }
}

/// A pg_restore script made runnable over a plain connection to `version`:
/// psql meta-commands (`\restrict`) and settings the server lacks removed,
/// and its `SET client_encoding`, since `script_text` made it UTF-8 for
/// pgtide's UTF8 session.
pub fn script_for_server(script: &str, version: ServerVersion) -> String {
    // Only pg_restore's own lines are touched: the preamble before the first
    // object and the `\unrestrict KEY` matching its `\restrict KEY`; lines
    // of function bodies and string literals stay as they are.
    let mut preamble = true;
    let mut unrestrict: Option<String> = None;
    let mut out = Vec::new();
    for l in script.lines() {
        if l.starts_with("-- Name:") {
            preamble = false;
        }
        let drop = if preamble {
            if let Some(key) = l.strip_prefix("\\restrict ") {
                unrestrict = Some(format!("\\unrestrict {key}"));
            }
            l.starts_with('\\')
                || l.starts_with("SET client_encoding")
                || (!version.has_transaction_timeout() && l.starts_with("SET transaction_timeout"))
        } else {
            unrestrict.as_deref() == Some(l)
        };
        if !drop {
            out.push(l);
        }
    }
    out.join("\n")
}

/// The encoding a pg_restore script says it is in (its
/// `SET client_encoding = '…';` line, which comes before any object).
pub fn script_encoding(script: &[u8]) -> Option<&str> {
    const SET: &[u8] = b"SET client_encoding = '";
    script
        .split(|&b| b == b'\n')
        .take_while(|l| !l.starts_with(b"-- Name:"))
        .find_map(|l| l.strip_prefix(SET))
        .and_then(|rest| rest.split(|&b| b == b'\'').next())
        .and_then(|e| std::str::from_utf8(e).ok())
}

/// A pg_restore script as UTF-8 text, for pgtide's UTF8 session. pg_restore
/// writes scripts in the archive's encoding (the source database's, or what
/// its `SET client_encoding` line says); tokio-postgres sends `&str`. Text
/// that is already UTF-8 is used as it is (always for UTF8 and for ASCII;
/// SQL_ASCII has no conversion, so it must be); other encodings are
/// converted by the target server (`convert_from`), which fails cleanly if
/// its own encoding cannot hold the text.
pub(crate) async fn script_text(
    c: &Client,
    script: Vec<u8>,
    archive_encoding: &str,
    pg_dump: &Path,
) -> Result<String, JobError> {
    let encoding = script_encoding(&script)
        .unwrap_or(archive_encoding)
        .to_string();
    let no_conversion =
        encoding.eq_ignore_ascii_case("UTF8") || encoding.eq_ignore_ascii_case("SQL_ASCII");
    if no_conversion || script.is_ascii() {
        return String::from_utf8(script).map_err(|_| {
            ToolError::Unusable {
                path: pg_dump.display().to_string(),
                reason: format!(
                    "its pg_restore writes a script for servers older than 17, and the script of this {encoding} dump holds bytes that are not UTF-8, which pgtide cannot send (name the pg_dump of the target's major version with --pg-dump)"
                ),
            }
            .into()
        });
    }
    Ok(c.query_one(
        "SELECT pg_catalog.convert_from($1::bytea, $2::text::name)",
        &[&script, &encoding],
    )
    .await
    .map_err(JobError::sql(format!(
        "convert the pg_restore script from {encoding}"
    )))?
    .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_for_older_servers_lose_what_they_cannot_run() {
        let script = "\\restrict abc\nSET statement_timeout = 0;\nSET transaction_timeout = 0;\nCREATE TABLE t ();\n\\unrestrict abc";
        assert_eq!(
            script_for_server(script, ServerVersion(130000)),
            "SET statement_timeout = 0;\nCREATE TABLE t ();"
        );
        assert_eq!(
            script_for_server(script, ServerVersion(170000)),
            "SET statement_timeout = 0;\nSET transaction_timeout = 0;\nCREATE TABLE t ();"
        );
        let latin1 = "SET client_encoding = 'LATIN1';\nCREATE TABLE \"données\" ();";
        assert_eq!(
            script_for_server(latin1, ServerVersion(150000)),
            "CREATE TABLE \"données\" ();"
        );
    }

    #[test]
    fn script_encoding_comes_from_its_set_line() {
        let script = b"SET statement_timeout = 0;\nSET client_encoding = 'LATIN1';\n\n-- Name: t\nCREATE TABLE \"caf\xe9\" ();\n";
        assert_eq!(script_encoding(script), Some("LATIN1"));
        assert_eq!(
            script_encoding(b"-- Name: t\nSET client_encoding = 'X';"),
            None
        );
        assert_eq!(script_encoding(b""), None);
    }
}
