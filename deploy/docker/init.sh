#!/bin/sh
# Make every file docker-compose.yml expects, in the current folder (run it next to the compose
# file): random secrets under ./secrets, the agent's master key and an empty enrollment-token
# file under ./config, and an empty ./data. Existing files are kept. No secret is printed.
set -eu
umask 077

rand_hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

make_secret() { # name, content: written once, readable inside the container (folder stays 0700)
  if [ ! -s "secrets/$1" ]; then
    printf '%s\n' "$2" > "secrets/$1"
  fi
  chmod 0644 "secrets/$1"
}

mkdir -p config data secrets cp-tls
chmod 0700 secrets

if [ ! -s config/master.key ]; then
  rand_hex > config/master.key
  echo "created config/master.key: keep a copy off this host; without it nothing decrypts"
fi
[ -e config/enrollment.token ] || : > config/enrollment.token
if [ ! -e config/agent.yaml ]; then
  cp "$(dirname "$0")/agent.yaml" config/agent.yaml
fi

if [ ! -s secrets/postgres_password ]; then
  pg_password=$(rand_hex)
  make_secret postgres_password "$pg_password"
  make_secret cp_database_url "postgresql+psycopg://keyvault:${pg_password}@postgres:5432/keyvault"
fi
if [ ! -s secrets/redis_conf ]; then
  redis_password=$(rand_hex)
  make_secret redis_conf "requirepass $redis_password"
  make_secret cp_redis_url "redis://:${redis_password}@redis:6379/0"
fi
make_secret cp_ca_key_passphrase "$(rand_hex)"
make_secret cp_owner_password "$(rand_hex)"

if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 config data cp-tls
else
  echo "now run: sudo chown -R 10001:10001 config data cp-tls   (the containers run as uid 10001)"
fi
