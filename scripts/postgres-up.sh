#!/usr/bin/env bash
# A PostgreSQL cluster of the tests' own (idempotent, quick when it already runs): its own data
# directory, owned by `postgres`, on 127.0.0.1 and a port of its own, trust authentication (local
# test use only: nothing but loopback reaches it). Prints the connection URL. Needs root and
# Debian's postgresql package (scripts/setup-system.sh installs it). Several callers at once (jest
# workers) serialize on a lock file, so only one runs initdb.
set -euo pipefail
DATA=${VMPOOLS_TEST_PG_DATA:-/var/lib/vmpools-test-pg}
PORT=${VMPOOLS_TEST_PG_PORT:-55432}
URL="postgres://postgres@127.0.0.1:${PORT}/postgres"

exec 9>/run/vmpools-test-pg.lock
flock 9

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "postgres-up: no PostgreSQL server under /usr/lib/postgresql; run scripts/setup-system.sh (as root) first" >&2
  exit 1
fi
as_pg() { runuser -u postgres -- "$@"; }

if [ ! -f "$DATA/PG_VERSION" ]; then
  echo "postgres-up: initdb $DATA" >&2
  install -d -o postgres -g postgres -m 0700 "$DATA"
  as_pg "$bin/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  cat >>"$DATA/postgresql.conf" <<CONF
# vmpools tests
listen_addresses = '127.0.0.1'
port = ${PORT}
unix_socket_directories = '${DATA}'
max_connections = 200
CONF
fi

if ! as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_pg "$bin/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 30 start >/dev/null 9>&-
fi
for _ in $(seq 1 100); do
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres; then
    echo "$URL"
    exit 0
  fi
  sleep 0.1
done
echo "postgres-up: the server in $DATA did not answer on 127.0.0.1:${PORT} within 10 s; see $DATA/server.log" >&2
exit 1
