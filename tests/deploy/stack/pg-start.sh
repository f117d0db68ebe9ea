#!/bin/sh
# The official postgres image's first-start contract, reduced: a cluster owned by
# $POSTGRES_USER whose password is the first line of $POSTGRES_PASSWORD_FILE (scram-sha-256
# over TCP), a database $POSTGRES_DB, then postgres in the foreground on every interface.
set -eu
data=/var/lib/postgresql/data
if [ ! -s "$data/PG_VERSION" ]; then
  initdb -D "$data" -U "$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all all scram-sha-256" >> "$data/pg_hba.conf"
  pg_ctl -D "$data" -o "-c listen_addresses= -k /var/run/postgresql" -w start >/dev/null
  createdb -h /var/run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
  pg_ctl -D "$data" -m fast -w stop >/dev/null
fi
exec postgres -D "$data" -c listen_addresses='*' -k /var/run/postgresql -c fsync=off
