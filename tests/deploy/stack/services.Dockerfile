# Stand-ins for the official postgres:16-bookworm and redis:7-bookworm images, which cannot be
# pulled where no registry is reachable: Debian 12's PostgreSQL 15 and Redis 7 on the same local
# base as our images, with the two behaviours docker-compose.yml relies on (PostgreSQL's
# POSTGRES_USER/POSTGRES_DB/POSTGRES_PASSWORD_FILE first-start setup; redis-server and
# redis-cli on PATH). Used only by tests/deploy/test_docker_stack.py.
ARG BASE=keyvault/python-runtime:3.11-bookworm
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      postgresql-15 redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY pg-start.sh /usr/local/bin/pg-start
ENV PATH=/usr/lib/postgresql/15/bin:$PATH
