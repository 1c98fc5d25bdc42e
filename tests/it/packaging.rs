//! The packaging files against the code, with no container engine and no
//! server: `docs/pgtide.example.toml`, `docker/` (Dockerfile, compose.yml
//! and the config it mounts), `packaging/systemd/pgtide.service` and
//! `packaging/kubernetes/*.yaml`.
//!
//! Checked: every configuration file they mount or embed loads with
//! `DaemonConfig::from_parts` (the secret files it names replaced by
//! temporary ones, after checking that they are mounted); every `PGTIDE_*`
//! variable they set is one the code reads; the port the daemon listens on
//! is the one published, exposed, probed and served; every file a container
//! reads is mounted where the config and the command say; every service,
//! volume, secret and key they refer to is declared; every command line
//! names a real subcommand and real flags (`pgtide <sub> --help`); the
//! README's reference names every variable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use pgtide::daemon::config::{env_keys, DaemonConfig, Overrides, ENV_HTTP_TOKEN};
use pgtide::pg::conninfo::ConnInfo;
use pgtide::storage::s3::S3Options;
use serde::Deserialize;
use serde_yaml::Value;

/// Variables the code reads besides the `PGTIDE_<SECTION>_<KEY>` ones of
/// `env_keys()`; `the_extra_variables_are_read_by_the_code` keeps this honest.
const OTHER_VARS: &[&str] = &[
    ENV_HTTP_TOKEN,
    "PGTIDE_CONFIG",
    "PGTIDE_REPO",
    "PGTIDE_LOG_FORMAT",
    "PGTIDE_PG_DUMP",
];

/// The config path every package passes to `pgtide daemon --config`.
const CONFIG_PATH: &str = "/etc/pgtide/pgtide.toml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn known_vars() -> BTreeSet<String> {
    env_keys()
        .map(|(_, v)| v)
        .chain(OTHER_VARS.iter().map(|v| v.to_string()))
        .collect()
}

fn check_var(origin: &str, name: &str) {
    if name.starts_with("PGTIDE_") {
        assert!(
            known_vars().contains(name),
            "{origin}: {name} is not a variable pgtide reads (env_keys() and OTHER_VARS)"
        );
    }
}

/// Every `PGTIDE_…` word of a text.
fn vars_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("PGTIDE_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].trim_end_matches('_').to_string());
        rest = &tail[end..];
    }
    out
}

// ---- configuration files ------------------------------------------------------

/// A configuration as a package ships it.
struct Loaded {
    cfg: DaemonConfig,
    /// The secret files it names: (key, path in the container or host).
    secret_files: Vec<(&'static str, String)>,
}

/// Load `text` as `from_parts` would in its container: the secret files it
/// names are replaced by temporary files (their real paths are checked
/// against the mounts by the caller).
fn load_config(origin: &str, text: &str, env: &BTreeMap<String, String>) -> Loaded {
    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{origin}: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut patched = text.to_string();
    let mut secret_files = Vec::new();
    for (key, section, name) in [
        ("source.password_file", "source", "password_file"),
        ("http.token_file", "http", "token_file"),
    ] {
        let Some(path) = table
            .get(section)
            .and_then(|s| s.get(name))
            .and_then(|v| v.as_str())
        else {
            continue;
        };
        assert!(
            path.starts_with('/'),
            "{origin}: {key} {path:?} is relative"
        );
        let tmp = dir.path().join(name);
        std::fs::write(&tmp, format!("secret-of-{name}\n")).unwrap();
        let quoted = format!("\"{path}\"");
        assert!(
            patched.contains(&quoted),
            "{origin}: {key} is not a plain string"
        );
        patched = patched.replace(&quoted, &format!("{:?}", tmp.display().to_string()));
        secret_files.push((key, path.to_string()));
    }
    let cfg = DaemonConfig::from_parts(
        Some(Path::new(origin)),
        &patched,
        env,
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{origin} does not load: {e}"));
    Loaded { cfg, secret_files }
}

/// Checks every shipped configuration shares.
fn check_service_config(origin: &str, l: &Loaded) {
    let db = &l.cfg.db;
    assert!(
        db.password.is_some()
            || l.secret_files
                .iter()
                .any(|(k, _)| *k == "source.password_file"),
        "{origin}: no password_file: the password would have to be inline"
    );
    assert!(
        l.cfg.http.token.is_some(),
        "{origin}: no token: the run endpoints would be off"
    );
    if let Some(url) = l.cfg.repo.strip_prefix("s3://") {
        let o = S3Options::parse(url).unwrap_or_else(|e| panic!("{origin}: repository: {e}"));
        if let Some(ep) = &o.endpoint {
            let host = ep
                .split_once("://")
                .map_or(ep.as_str(), |(_, r)| r)
                .split([':', '/'])
                .next()
                .unwrap();
            let local = host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok();
            assert!(
                local || o.path_style == Some(true),
                "{origin}: endpoint {ep} is a host name: without path_style=true the bucket becomes a DNS name ({}.{host})",
                o.bucket
            );
        }
    }
}

/// `docs/pgtide.example.toml`: loads, sets every key of the schema, and
/// names every key's variable in its comments.
#[test]
fn the_example_config_loads_and_covers_every_key() {
    let text = read("docs/pgtide.example.toml");
    let l = load_config("docs/pgtide.example.toml", &text, &BTreeMap::new());
    check_service_config("docs/pgtide.example.toml", &l);
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    // `[[repository]]` entries: the primary holds the keys the environment
    // sets; a copy entry shows every key of its own.
    let entries = table["repository"]
        .as_array()
        .expect("the example uses [[repository]] entries")
        .clone();
    let is_copy = |e: &toml::Value| e.get("copy").and_then(toml::Value::as_bool) == Some(true);
    let copy = entries.iter().find(|e| is_copy(e)).expect("a copy entry");
    for key in ["url", "copy", "retention"] {
        assert!(
            copy.get(key).is_some(),
            "the example copy entry lacks {key}"
        );
    }
    assert_eq!(l.cfg.copies.len(), 1);
    assert!(l.cfg.copies[0].retention_backups.has_rules());
    assert!(l.cfg.copies[0].retention_dumps.has_rules());
    let primary = entries
        .into_iter()
        .find(|e| !is_copy(e))
        .expect("a primary entry");
    table.insert("repository".into(), primary);
    for (path, var) in env_keys() {
        let mut v: Option<&toml::Value> = None;
        let mut t = &table;
        for (i, part) in path.split('.').enumerate() {
            let last = i == path.split('.').count() - 1;
            match t.get(part) {
                Some(toml::Value::Table(inner)) if !last => t = inner,
                Some(x) if last => v = Some(x),
                _ => break,
            }
        }
        assert!(v.is_some(), "docs/pgtide.example.toml does not set {path}");
        assert!(
            text.contains(&format!("env: {var}")),
            "docs/pgtide.example.toml does not name {var} for {path}"
        );
    }
    let dump = table["dump"].as_array().unwrap()[0].as_table().unwrap();
    for key in ["database", "schedule", "jobs", "compress"] {
        assert!(dump.contains_key(key), "the example [[dump]] lacks {key}");
    }
    assert!(text.contains(ENV_HTTP_TOKEN));
    for var in vars_in(&text) {
        check_var("docs/pgtide.example.toml", &var);
    }
    // The defaults it states for the keys it leaves at them.
    let empty =
        DaemonConfig::from_parts(None, "", &BTreeMap::new(), &Overrides::default()).unwrap();
    assert_eq!(empty.http.listen.to_string(), "127.0.0.1:9187");
    assert!(text.contains("default: \"127.0.0.1:9187\""));
    assert_eq!(empty.wal.slot, "pgtide");
    assert_eq!(empty.lock_stale_after.as_secs(), 120);
    assert_eq!(empty.wal.slot_warn, 10 << 30);
}

#[test]
fn the_extra_variables_are_read_by_the_code() {
    let mut src = String::new();
    let mut dirs = vec![root().join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                src.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    for v in OTHER_VARS {
        assert!(
            src.contains(&format!("\"{v}\"")),
            "{v} is listed as a variable pgtide reads, but src/ never names it"
        );
    }
}

// ---- command lines -----------------------------------------------------------------

/// `args` (what follows `pgtide`) names a subcommand whose `--help` lists
/// every `--flag` used. Returns the value of each `--flag value` pair.
fn check_command(origin: &str, args: &[String]) -> BTreeMap<String, String> {
    let first = args
        .first()
        .unwrap_or_else(|| panic!("{origin}: empty command"));
    let sub: Vec<&str> = if first == "wal" {
        vec!["wal", args[1].as_str()]
    } else {
        vec![first.as_str()]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_pgtide"))
        .args(&sub)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{origin}: `pgtide {} --help` fails: {}",
        sub.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let mut values = BTreeMap::new();
    let mut i = sub.len();
    while i < args.len() {
        let a = &args[i];
        if let Some(flag) = a.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let spelled = format!("--{name}");
            let listed = help.match_indices(&spelled).any(|(at, _)| {
                !help[at + spelled.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
            assert!(
                listed,
                "{origin}: `pgtide {}` has no {spelled}:\n{help}",
                sub.join(" ")
            );
            let value = inline.or_else(|| {
                args.get(i + 1)
                    .filter(|v| !v.starts_with('-'))
                    .inspect(|_| i += 1)
                    .cloned()
            });
            values.insert(name.to_string(), value.unwrap_or_default());
        }
        i += 1;
    }
    values
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            })
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Null => Vec::new(),
        other => panic!("not a command: {other:?}"),
    }
}

fn str_of<'a>(v: &'a Value, origin: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{origin}: expected a string, got {v:?}"))
}

// ---- Dockerfile --------------------------------------------------------------------

struct Dockerfile {
    cmd: Vec<String>,
    entrypoint: Vec<String>,
    expose: Vec<u16>,
    text: String,
}

fn dockerfile() -> Dockerfile {
    let text = read("docker/Dockerfile");
    // Instructions with their continuation lines joined.
    let mut lines = Vec::new();
    let mut cur = String::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if let Some(s) = t.strip_suffix('\\') {
            cur.push_str(s);
            cur.push(' ');
        } else {
            cur.push_str(t);
            lines.push(std::mem::take(&mut cur));
        }
    }
    let json = |rest: &str| -> Vec<String> {
        serde_json::from_str(rest.trim())
            .unwrap_or_else(|e| panic!("docker/Dockerfile: use the JSON form ({e}): {rest}"))
    };
    let mut d = Dockerfile {
        cmd: Vec::new(),
        entrypoint: Vec::new(),
        expose: Vec::new(),
        text: text.clone(),
    };
    for l in &lines {
        let (ins, rest) = l.split_once(' ').unwrap_or((l, ""));
        match ins.to_ascii_uppercase().as_str() {
            "CMD" => d.cmd = json(rest),
            "ENTRYPOINT" => d.entrypoint = json(rest),
            "EXPOSE" => d.expose.extend(
                rest.split_whitespace()
                    .map(|p| p.trim_end_matches("/tcp").parse::<u16>().unwrap()),
            ),
            "COPY" if !rest.contains("--from") => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                for src in &parts[..parts.len() - 1] {
                    assert!(
                        root().join(src).exists(),
                        "docker/Dockerfile copies {src}, which the repository lacks"
                    );
                    let ignored = read(".dockerignore");
                    assert!(
                        !ignored
                            .lines()
                            .any(|i| i.trim() == src.trim_end_matches('/')),
                        ".dockerignore leaves out {src}, which the Dockerfile copies"
                    );
                }
            }
            _ => {}
        }
    }
    d
}

#[test]
fn the_dockerfile_runs_the_daemon_on_the_config() {
    let d = dockerfile();
    assert_eq!(d.entrypoint, ["pgtide"]);
    let flags = check_command("docker/Dockerfile CMD", &d.cmd);
    assert_eq!(d.cmd[0], "daemon");
    assert_eq!(flags["config"], CONFIG_PATH);
    assert_eq!(d.expose, [9187], "EXPOSE must be the daemon's port");
    for needed in [
        "cargo build --release --locked",
        "postgresql-client",
        "ca-certificates",
        "/usr/bin/pgtide",
    ] {
        assert!(d.text.contains(needed), "docker/Dockerfile lacks {needed}");
    }
    let user = d
        .text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("docker/Dockerfile: a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user}"
    );
    // The builder's Rust is not older than the crate's rust-version.
    let msrv = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap();
    let rust = d
        .text
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let ver = |s: &str| -> (u32, u32) {
        let mut p = s.split('.').map(|n| n.parse::<u32>().unwrap());
        (p.next().unwrap(), p.next().unwrap())
    };
    assert!(
        ver(rust) >= ver(&msrv),
        "Rust {rust} is older than rust-version {msrv}"
    );
}

// ---- compose ---------------------------------------------------------------------------

fn env_map(v: Option<&Value>, origin: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let val = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                out.insert(str_of(k, origin).to_string(), val);
            }
        }
        Some(Value::Sequence(s)) => {
            for e in s {
                let e = str_of(e, origin);
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                out.insert(k.to_string(), v.to_string());
            }
        }
        Some(other) => panic!("{origin}: environment {other:?}"),
    }
    for k in out.keys() {
        check_var(origin, k);
    }
    out
}

/// The container port of a compose `ports` entry (`[ip:]host:container[/proto]`).
fn container_port(v: &Value) -> u16 {
    match v {
        Value::String(s) => s
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches("/tcp")
            .parse()
            .unwrap(),
        Value::Number(n) => n.as_u64().unwrap() as u16,
        Value::Mapping(m) => m[&Value::from("target")].as_u64().unwrap() as u16,
        other => panic!("port {other:?}"),
    }
}

#[test]
fn the_compose_stack_is_consistent() {
    let origin = "docker/compose.yml";
    let doc: Value = serde_yaml::from_str(&read(origin)).unwrap();
    let services = doc["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().map(|k| str_of(k, origin)).collect();
    let volumes: BTreeSet<&str> = doc
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().map(|k| str_of(k, origin)).collect())
        .unwrap_or_default();
    let secrets = doc
        .get("secrets")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    let secret_file = |name: &str| -> String {
        let s = secrets
            .get(name)
            .unwrap_or_else(|| panic!("{origin}: secret {name} is not declared"));
        let f = str_of(&s["file"], origin);
        let p = root().join("docker").join(f);
        assert!(p.is_file(), "{origin}: secret file {f} is missing");
        std::fs::read_to_string(p).unwrap().trim().to_string()
    };
    let mut daemon = None;
    for (name, svc) in services {
        let name = str_of(name, origin);
        let here = format!("{origin} service {name}");
        match svc.get("depends_on") {
            None => {}
            Some(Value::Sequence(s)) => {
                for d in s {
                    assert!(
                        names.contains(str_of(d, &here)),
                        "{here} depends on a missing {d:?}"
                    );
                }
            }
            Some(Value::Mapping(m)) => {
                for d in m.keys() {
                    assert!(
                        names.contains(str_of(d, &here)),
                        "{here} depends on a missing {d:?}"
                    );
                }
            }
            Some(other) => panic!("{here}: depends_on {other:?}"),
        }
        for v in svc
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let v = str_of(v, &here);
            let src = v.split(':').next().unwrap();
            if src.starts_with('.') || src.starts_with('/') {
                assert!(
                    root().join("docker").join(src).exists(),
                    "{here} mounts a missing {src}"
                );
            } else {
                assert!(
                    volumes.contains(src),
                    "{here} uses the undeclared volume {src}"
                );
            }
        }
        for s in svc
            .get("secrets")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            secret_file(str_of(s, &here));
        }
        env_map(svc.get("environment"), &here);
        let is_daemon = svc
            .get("image")
            .and_then(Value::as_str)
            .is_some_and(|i| i.starts_with("pgtide"))
            || svc.get("build").is_some_and(|b| {
                b.get("dockerfile").and_then(Value::as_str) == Some("docker/Dockerfile")
            });
        if is_daemon {
            daemon = Some((name, svc));
        }
    }
    let (name, svc) = daemon.expect("compose.yml: a service built from docker/Dockerfile");
    let here = format!("{origin} service {name}");
    if let Some(b) = svc.get("build") {
        let ctx = root().join("docker").join(str_of(&b["context"], &here));
        assert!(
            ctx.join(str_of(&b["dockerfile"], &here)).is_file(),
            "{here}: build context"
        );
    }
    // The command (its own, or the image's CMD) and the config it names.
    let cmd = match svc.get("command") {
        Some(c) => strings(c),
        None => dockerfile().cmd,
    };
    let flags = check_command(&here, &cmd);
    assert_eq!(cmd[0], "daemon", "{here}");
    let config = &flags["config"];
    let mounts: Vec<(String, String)> = svc["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| {
            let mut p = str_of(v, &here).split(':');
            (p.next().unwrap().to_string(), p.next().unwrap().to_string())
        })
        .collect();
    let (src, _) = mounts
        .iter()
        .find(|(_, dst)| dst == config)
        .unwrap_or_else(|| panic!("{here}: nothing is mounted at {config}"));
    let src = src.trim_start_matches("./");
    let text = read(&format!("docker/{src}"));
    let env = env_map(svc.get("environment"), &here);
    let l = load_config(&format!("docker/{src}"), &text, &BTreeMap::new());
    check_service_config(&here, &l);
    let pgtide_env: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("PGTIDE_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    load_config(
        &format!("docker/{src} with {name}'s environment"),
        &text,
        &pgtide_env,
    );
    // Secret files the config and the environment name are mounted secrets.
    let own_secrets: BTreeSet<String> = svc["secrets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| str_of(s, &here).to_string())
        .collect();
    let mounted_secret = |what: &str, path: &str| {
        let secret = path
            .strip_prefix("/run/secrets/")
            .unwrap_or_else(|| panic!("{here}: {what} {path} is not under /run/secrets"));
        assert!(
            own_secrets.contains(secret),
            "{here}: {what} {path}: secret {secret} is not given to {name}"
        );
    };
    for (key, path) in &l.secret_files {
        mounted_secret(key, path);
    }
    let creds = env
        .get("AWS_SHARED_CREDENTIALS_FILE")
        .expect("S3 credentials through AWS_SHARED_CREDENTIALS_FILE");
    mounted_secret("AWS_SHARED_CREDENTIALS_FILE", creds);
    // The port: listened on all interfaces, published, exposed.
    let listen = l.cfg.http.listen;
    assert!(
        listen.ip().is_unspecified(),
        "{here}: http.listen {listen} is unreachable from outside the container"
    );
    let ports: Vec<u16> = svc["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(container_port)
        .collect();
    assert!(
        ports.contains(&listen.port()),
        "{here} publishes {ports:?}, the daemon listens on {listen}"
    );
    assert!(dockerfile().expose.contains(&listen.port()));

    // The database and the store the config points at are the stack's.
    let db = &l.cfg.db;
    let pg_name = db.hosts.first().expect("source.db host");
    let pg = services
        .get(pg_name.as_str())
        .unwrap_or_else(|| panic!("{here}: source.db host {pg_name} is not a service"));
    let pg_cmd = strings(&pg["command"]).join(" ");
    assert!(
        pg_cmd.contains("wal_level=replica") || pg_cmd.contains("wal_level=logical"),
        "{pg_name}: wal_level"
    );
    let user = db.user.as_deref().expect("source.db user");
    let init = read("docker/initdb/10-pgtide.sh");
    assert!(
        init.contains(&format!("CREATE ROLE {user} WITH LOGIN REPLICATION")),
        "initdb/10-pgtide.sh must create {user} with REPLICATION"
    );
    assert!(
        init.contains(&format!("host replication {user} ")),
        "pg_hba.conf line for {user}"
    );
    let password_secret = l
        .secret_files
        .iter()
        .find(|(k, _)| *k == "source.password_file")
        .unwrap();
    assert!(
        init.contains(&password_secret.1),
        "initdb/10-pgtide.sh must set the password from {}",
        password_secret.1
    );
    let pg_env = env_map(pg.get("environment"), pg_name);
    for d in &l.cfg.dumps {
        assert!(
            d.database == "postgres" || pg_env.get("POSTGRES_DB") == Some(&d.database),
            "{here}: [[dump]] database {} does not exist in {pg_name}",
            d.database
        );
    }
    let s3 = S3Options::parse(
        l.cfg
            .repo
            .strip_prefix("s3://")
            .expect("an s3:// repository"),
    )
    .unwrap();
    let endpoint = s3.endpoint.as_deref().expect("an endpoint");
    let store = endpoint
        .split("://")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(
        names.contains(store),
        "{here}: endpoint host {store} is not a service"
    );
    let mb = names
        .iter()
        .filter_map(|n| services.get(*n).and_then(|s| s.get("entrypoint")))
        .map(|e| strings(e).join(" "))
        .find(|e| e.contains("mc mb"))
        .expect("a service that creates the bucket");
    assert!(
        mb.contains(&format!("/{}", s3.bucket)),
        "the bucket {} is never created",
        s3.bucket
    );
    // pgtide's S3 credentials are the store's.
    let access = secret_file("s3_access_key");
    let secret = secret_file("s3_secret_key");
    let aws = secret_file(creds.strip_prefix("/run/secrets/").unwrap());
    assert!(
        aws.contains(&format!("aws_access_key_id = {access}")),
        "aws_credentials vs s3_access_key"
    );
    assert!(
        aws.contains(&format!("aws_secret_access_key = {secret}")),
        "aws_credentials vs s3_secret_key"
    );
}

// ---- systemd -------------------------------------------------------------------------

#[test]
fn the_systemd_unit_is_consistent() {
    let origin = "packaging/systemd/pgtide.service";
    let text = read(origin);
    let mut section = String::new();
    let mut keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for l in text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("{origin}: not key=value: {l}"));
        keys.entry((section.clone(), k.to_string()))
            .or_default()
            .push(v.to_string());
    }
    let get = |s: &str, k: &str| -> Vec<String> {
        keys.get(&(s.to_string(), k.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let one = |s: &str, k: &str| -> String {
        let v = get(s, k);
        assert_eq!(v.len(), 1, "{origin}: [{s}] {k} = {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Service", "Type"), "simple");
    assert_eq!(one("Service", "Restart"), "on-failure");
    let exec: Vec<String> = one("Service", "ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(exec[0], "/usr/bin/pgtide");
    let flags = check_command(origin, &exec[1..]);
    assert_eq!(exec[1], "daemon");
    assert_eq!(flags["config"], CONFIG_PATH);
    assert_eq!(one("Service", "ExecReload"), "/bin/kill -HUP $MAINPID");
    let user = one("Service", "User");
    assert!(user != "root" && !user.is_empty());
    assert!(one("Install", "WantedBy").contains("multi-user.target"));
    // Hardening that would break it.
    let families = one("Service", "RestrictAddressFamilies");
    for f in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(
            families.contains(f),
            "{origin}: RestrictAddressFamilies lacks {f}"
        );
    }
    assert!(
        get("Service", "PrivateNetwork").iter().all(|v| v != "yes"),
        "needs the network"
    );
    assert!(
        get("Service", "ProtectProc")
            .iter()
            .all(|v| v != "invisible"),
        "the repository lock reads /proc to see whether a holder on this host still runs"
    );
    for v in get("Service", "Environment") {
        for word in v.split_whitespace() {
            check_var(origin, word.split('=').next().unwrap());
        }
    }
    for var in vars_in(&text) {
        check_var(origin, &var);
    }
    // The config it runs is the documented example (installed at CONFIG_PATH).
    assert!(text.contains(&format!("docs/pgtide.example.toml {CONFIG_PATH}")));
    let home = one("Service", "StateDirectory");
    assert_eq!(
        one("Service", "WorkingDirectory"),
        format!("/var/lib/{home}")
    );
}

// ---- Kubernetes ------------------------------------------------------------------------

fn k8s_docs() -> Vec<(String, Value)> {
    let dir = root().join("packaging/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                out.push((name.clone(), v));
            }
        }
    }
    out
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("packaging/kubernetes: no {kind} {name}"))
}

/// The keys of a Secret (data and stringData).
fn secret_keys(s: &Value) -> BTreeSet<String> {
    ["data", "stringData"]
        .iter()
        .filter_map(|k| s.get(*k).and_then(Value::as_mapping))
        .flat_map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()))
        .collect()
}

/// Resolve a file path inside a container to (volume source kind, name, key).
fn file_source(
    docs: &[(String, Value)],
    pod: &Value,
    container: &Value,
    path: &str,
) -> (String, String) {
    for m in container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let mount = m["mountPath"].as_str().unwrap();
        let rel = if let Some(sub) = m.get("subPath").and_then(Value::as_str) {
            if path != mount {
                continue;
            }
            sub.to_string()
        } else {
            match path.strip_prefix(&format!("{mount}/")) {
                Some(r) => r.to_string(),
                None => continue,
            }
        };
        let vol = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("volume {:?} is not declared", m["name"]));
        let (kind, src) = if let Some(c) = vol.get("configMap") {
            ("ConfigMap", c)
        } else if let Some(s) = vol.get("secret") {
            ("Secret", s)
        } else {
            panic!(
                "{path} is on volume {:?}, neither a ConfigMap nor a Secret",
                m["name"]
            );
        };
        let name = src
            .get("name")
            .or_else(|| src.get("secretName"))
            .and_then(Value::as_str)
            .unwrap();
        let key = match src.get("items").and_then(Value::as_sequence) {
            Some(items) => items
                .iter()
                .find(|i| i["path"] == rel.as_str())
                .map(|i| i["key"].as_str().unwrap().to_string())
                .unwrap_or_else(|| panic!("{path}: the {kind} {name} items do not include {rel}")),
            None => rel,
        };
        let obj = find(docs, kind, name);
        let keys = if kind == "Secret" {
            secret_keys(obj)
        } else {
            obj["data"]
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| k.as_str().unwrap().to_string())
                .collect()
        };
        assert!(
            keys.contains(&key),
            "{path}: the {kind} {name} has no key {key}"
        );
        return (format!("{kind}/{name}"), key);
    }
    panic!("{path} is not mounted in container {:?}", container["name"]);
}

fn check_container_basics(origin: &str, pod: &Value, c: &Value) {
    let vols: BTreeSet<&str> = pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
        assert!(
            vols.contains(m["name"].as_str().unwrap()),
            "{origin}: volume {:?} is not declared",
            m["name"]
        );
    }
    for e in c["env"].as_sequence().into_iter().flatten() {
        check_var(origin, e["name"].as_str().unwrap());
    }
}

#[test]
fn the_kubernetes_manifests_are_consistent() {
    let docs = k8s_docs();
    // kustomization.yaml names exactly the other files.
    let kust = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Kustomization")
        .map(|(_, d)| d)
        .expect("kustomization.yaml");
    let listed: BTreeSet<String> = strings(&kust["resources"]).into_iter().collect();
    let files: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| d["kind"] != "Kustomization")
        .map(|(f, _)| f.clone())
        .collect();
    assert_eq!(listed, files, "kustomization.yaml resources");

    // The daemon.
    let dep = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let origin = "packaging/kubernetes Deployment";
    assert_eq!(
        dep["spec"]["replicas"].as_u64(),
        Some(1),
        "one daemon per repository"
    );
    assert_eq!(
        dep["spec"]["strategy"]["type"], "Recreate",
        "never two daemons at once"
    );
    let pod = &dep["spec"]["template"]["spec"];
    let labels = dep["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .unwrap();
    for (k, v) in dep["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(labels.get(k), Some(v), "{origin}: selector vs pod labels");
    }
    let c = &pod["containers"][0];
    check_container_basics(origin, pod, c);
    let args = strings(&c["args"]);
    let flags = check_command(origin, &args);
    assert_eq!(args[0], "daemon");
    let config = &flags["config"];
    let (src, key) = file_source(&docs, pod, c, config);
    assert!(src.starts_with("ConfigMap/"), "{config} comes from {src}");
    let cm = find(&docs, "ConfigMap", src.trim_start_matches("ConfigMap/"));
    let text = cm["data"][key.as_str()].as_str().unwrap();
    let l = load_config(&format!("{src} {key}"), text, &BTreeMap::new());
    check_service_config(origin, &l);
    for (k, path) in &l.secret_files {
        let (from, _) = file_source(&docs, pod, c, path);
        assert!(
            from.starts_with("Secret/"),
            "{k} {path} must come from a Secret, not {from}"
        );
    }
    for e in c["env"].as_sequence().into_iter().flatten() {
        if e["name"] == "AWS_SHARED_CREDENTIALS_FILE" {
            file_source(&docs, pod, c, e["value"].as_str().unwrap());
        }
    }
    // One port everywhere: listened on, declared, probed, served, scraped.
    let listen = l.cfg.http.listen;
    assert!(
        listen.ip().is_unspecified(),
        "{origin}: http.listen {listen} is unreachable from the kubelet"
    );
    let ports = c["ports"].as_sequence().unwrap();
    let port_of = |p: &Value| -> u64 {
        match p {
            Value::Number(n) => n.as_u64().unwrap(),
            Value::String(name) => ports
                .iter()
                .find(|q| q["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{origin}: no port named {name}"))["containerPort"]
                .as_u64()
                .unwrap(),
            other => panic!("port {other:?}"),
        }
    };
    assert!(ports
        .iter()
        .any(|p| p["containerPort"].as_u64() == Some(u64::from(listen.port()))));
    let routes = read("src/daemon/http.rs");
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/healthz")] {
        let g = &c[probe]["httpGet"];
        assert_eq!(g["path"], path, "{origin}: {probe}");
        assert!(
            routes.contains(&format!(".route(\"{path}\"")),
            "the daemon serves {path}"
        );
        assert_eq!(
            port_of(&g["port"]),
            u64::from(listen.port()),
            "{origin}: {probe} port"
        );
    }
    assert!(
        routes.contains(".route(\"/healthz\""),
        "the daemon serves /healthz"
    );
    let svc = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "Service")
        .expect("a Service");
    for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(labels.get(k), Some(v), "Service selector vs pod labels");
    }
    let sp = &svc["spec"]["ports"][0];
    assert_eq!(
        port_of(&sp["targetPort"]),
        u64::from(listen.port()),
        "Service targetPort"
    );
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(
        ann["prometheus.io/port"].as_str(),
        Some(sp["port"].as_u64().unwrap().to_string().as_str())
    );
    let path = ann["prometheus.io/path"].as_str().unwrap();
    assert!(
        routes.contains(&format!(".route(\"{path}\"")),
        "the daemon does not serve {path}"
    );

    // The dump CronJob.
    let cj = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "CronJob")
        .expect("a CronJob");
    let origin = "packaging/kubernetes CronJob";
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    check_container_basics(origin, pod, c);
    let args = strings(&c["args"]);
    let flags = check_command(origin, &args);
    assert_eq!(args[0], "dump");
    let repo = flags.get("repo").expect("--repo");
    assert_ne!(
        repo, &l.cfg.repo,
        "the daemon holds its repository's writer lock: a dump into it would exit 9"
    );
    ConnInfo::parse(&flags["db"]).expect("--db parses");
    for e in c["env"].as_sequence().into_iter().flatten() {
        if let Some(r) = e.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
            let s = find(&docs, "Secret", r["name"].as_str().unwrap());
            assert!(
                secret_keys(s).contains(r["key"].as_str().unwrap()),
                "{origin}: {r:?}"
            );
        }
        if e["name"] == "AWS_SHARED_CREDENTIALS_FILE" {
            file_source(&docs, pod, c, e["value"].as_str().unwrap());
        }
    }
}

// ---- README --------------------------------------------------------------------------

#[test]
fn the_readme_documents_every_variable_and_package() {
    let readme = read("README.md");
    for (path, var) in env_keys() {
        assert!(
            readme.contains(&format!("`{var}`")),
            "README.md lacks {var} ({path})"
        );
    }
    for v in OTHER_VARS {
        assert!(readme.contains(v), "README.md lacks {v}");
    }
    for f in [
        "docs/pgtide.example.toml",
        "docker/Dockerfile",
        "docker/compose.yml",
        "packaging/systemd/pgtide.service",
        "packaging/kubernetes",
    ] {
        assert!(readme.contains(f), "README.md does not mention {f}");
    }
}
