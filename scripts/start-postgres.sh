#!/usr/bin/env bash
# Starts a local PostgreSQL (Debian's package) with a database for the CDR tests, and prints the URL to export
# as IVR_TEST_POSTGRES_URL. Idempotent: an existing cluster, user or database is reused.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v pg_lsclusters >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
read -r version cluster _ < <(pg_lsclusters --no-header | head -1)
$SUDO pg_ctlcluster "$version" "$cluster" start >/dev/null 2>&1 || true
psql_as_postgres() {
    if [ -n "$SUDO" ]; then sudo -u postgres psql -qAt -c "$1"; else su postgres -s /bin/sh -c "psql -qAt -c \"$1\""; fi
}
for _ in $(seq 1 50); do
    if psql_as_postgres "select 1" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
if [ "$(psql_as_postgres "select 1 from pg_roles where rolname='ivr'")" != "1" ]; then
    psql_as_postgres "create user ivr password 'ivr'"
fi
if [ "$(psql_as_postgres "select 1 from pg_database where datname='ivr_test'")" != "1" ]; then
    psql_as_postgres "create database ivr_test owner ivr"
fi
echo "postgresql://ivr:ivr@127.0.0.1:5432/ivr_test"
