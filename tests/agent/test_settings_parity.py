"""The agent's settings load exactly as they did with pydantic (parity with commit ae3dc19).

``agent.settings`` moved from pydantic / pydantic-settings to :mod:`common.typedconf` (issue 18:
idle memory). Each case below is a YAML file, environment variables and flags; the expected
values and error lines were recorded from the pydantic version (ae3dc19, ``load_settings``
then ``model_dump``) and written here as literals. A value case lists the top-level keys that
differ from :data:`DEFAULTS`; numbers are compared with their type (``60`` is not ``60.0``).

Two cases changed on purpose (kind ``changed``): a variable whose JSON does not parse stopped
pydantic-settings with a ``SettingsError`` traceback; it is now a ConfigError line naming the
variable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.settings import AgentSettings
from common.errors import ConfigError
from common.typedconf import SecretStr, load_settings

# The variables the settings read outside the KEYVAULT_ prefix (their alias choices, matched
# case-insensitively, as pydantic-settings did).
UNPREFIXED = {
    "vault_master_key_file",
    "control_plane_url",
    "pod_name",
    "master_key_file",
    "master_key_credential",
    "master_passphrase",
    "replica_name",
}

FULL_YAML = """
data_dir: /srv/kv
master_key_file: /srv/kv/master.key
kdf_iterations: 700000
bind: 0.0.0.0
port: "8443"
tls:
  cert_file: /etc/kv/server.crt
  key_file: /etc/kv/server.key
  client_ca_file: /etc/kv/ca.crt
  client_cert: optional
storage:
  url: postgresql+psycopg://kv@db/kv
  sqlite_synchronous: NORMAL
audit_fsync: yes
replica_name: kv-0
workers: 2
max_body_bytes: 1048576
max_value_bytes: 65536
shutdown_timeout: 20
log_format: json
log_level: DEBUG
control_plane_url: https://cp.example
uplink:
  heartbeat_interval: 10
  backoff_base: 1
  backoff_cap: 30
  batch_size: 100
  renew_at: 0.5
  enroll_poll_interval: 2
  ack_timeout: 30
  trace_file: /var/log/kv/uplink.jsonl
rotation:
  jitter_fraction: 0.2
  scan_interval_seconds: 30
  retry_base_seconds: 120
  evaluation_budget_seconds: 5
  protected_names: ["prod/root/**"]
  postgres:
    main:
      dsn_file: /etc/kv/pg.dsn
      host: db.internal
      port: 5433
      dbname: app
      roles: [app, app_alt]
  commands:
    reload-app:
      argv: [/usr/bin/systemctl, reload, app]
      timeout_seconds: 60
auth:
  jwt:
    max_ttl_s: 7200
    issuers:
      - name: cluster
        issuer: https://kubernetes.default.svc
        jwks_file: /etc/kv/jwks.json
        audiences: [keyvault]
        max_clock_skew_s: 30
      - name: ci
        issuer: https://ci.example
        jwks_url: https://ci.example/jwks
        jwks_ca_file: /etc/kv/ci-ca.pem
        audiences: [kv, kv2]
        jwks_refresh_s: 600
    roles:
      - name: api
        issuer: cluster
        bound_subject: "system:serviceaccount:payments:api"
        policy: {read: ["prod/payments/**"], list: ["prod/**"]}
        ttl_s: 600
      - name: deploy
        issuer: ci
        bound_claims: {repository: acme/api, ref: ["refs/heads/main", "refs/tags/*"]}
        policy: {write: ["ci/**"]}
webhooks:
  - url: https://hooks.example/kv
    secret_env: KV_HOOK_SECRET
    names: ["prod/**"]
    timeout_s: 2
    retries: 3
  - url: http://127.0.0.1:9000/hook
    secret_file: /etc/kv/hook.secret
templates:
  - destination: /etc/app/app.env
    inline: "A={{ secret('prod/a') }}"
    mode: "0640"
    on_change:
      command: [/usr/bin/systemctl, reload, app]
      timeout_seconds: 10
  - name: nginx-cert
    source: /etc/kv/templates/cert.tmpl
    destination: /etc/nginx/cert.pem
    mode: 416
    min_interval_ms: 1000
    error_on_missing: false
    on_change:
      signal: {pid_file: /run/nginx.pid, signal: SIGUSR1}
template_limits:
  max_templates: 10
  max_source_bytes: 4096
  max_rendered_bytes: 8192
  render_budget_seconds: 1.5
metadata_key_file: /srv/kv/metadata.key
"""

CASES = [
    ("defaults", "", {}, {}),
    ("full yaml", FULL_YAML, {}, {}),
    (
        "env scalars",
        "",
        {
            "KEYVAULT_PORT": "7001",
            "KEYVAULT_TLS__CLIENT_CERT": "none",
            "KEYVAULT_TLS__ENABLED": "false",
            "KEYVAULT_AUDIT_FSYNC": "on",
            "KEYVAULT_LOG_LEVEL": "ERROR",
            "KEYVAULT_UPLINK__HEARTBEAT_INTERVAL": "5",
            "KEYVAULT_UPLINK__BATCH_SIZE": " 42 ",
            "KEYVAULT_SHUTDOWN_TIMEOUT": "1e1",
            "KEYVAULT_DATA_DIR": "/tmp/kvdata",
        },
        {},
    ),
    (
        "env case-insensitive",
        "",
        {
            "keyvault_port": "7002",
            "Keyvault_Tls__Client_Cert": "optional",
            "KEYVAULT_storage__URL": "sqlite:////tmp/x.db",
        },
        {},
    ),
    (
        "env over yaml",
        "port: 7000\nbind: 127.0.0.2\ntls:\n  client_cert: none\n  cert_file: /a.crt\n",
        {"KEYVAULT_PORT": "7100", "KEYVAULT_TLS__CLIENT_CERT": "required"},
        {},
    ),
    (
        "flags over env",
        "port: 7000\n",
        {"KEYVAULT_PORT": "7100", "KEYVAULT_BIND": "127.0.0.3"},
        {"port": 7200, "bind": None},
    ),
    (
        "env json list and model",
        "",
        {
            "KEYVAULT_WEBHOOKS": '[{"url": "https://h.example/x", "secret_env": "S"}]',
            "KEYVAULT_ROTATION__PROTECTED_NAMES": '["prod/**", "ops/*"]',
            "KEYVAULT_TLS": '{"client_cert": "none", "cert_file": "/j.crt"}',
            "KEYVAULT_TLS__CERT_FILE": "/e.crt",
        },
        {},
    ),
    (
        "env dict of models",
        "rotation:\n  postgres:\n    main:\n      dsn_file: /y\n      host: h\n",
        {
            "KEYVAULT_ROTATION__POSTGRES__MAIN__DSN_FILE": "/x",
            "KEYVAULT_ROTATION__POSTGRES__MAIN__ROLES": '["app"]',
            "KEYVAULT_ROTATION__POSTGRES__MAIN__PORT": "5433",
            "KEYVAULT_ROTATION__COMMANDS__RELOAD__ARGV": '["/bin/true", "x"]',
        },
        {},
    ),
    (
        "env json dict",
        "",
        {
            "KEYVAULT_ROTATION__COMMANDS": '{"reload-app": {"argv": ["/bin/true"]}}',
            "KEYVAULT_ROTATION__JITTER_FRACTION": "0.25",
        },
        {},
    ),
    (
        "seed aliases",
        "",
        {
            "VAULT_MASTER_KEY_FILE": "/app/config/master.key",
            "CONTROL_PLANE_URL": "https://api.keyvault.example",
            "POD_NAME": "keyvault-1",
        },
        {},
    ),
    (
        "prefixed aliases win",
        "",
        {
            "VAULT_MASTER_KEY_FILE": "/a",
            "KEYVAULT_MASTER_KEY_FILE": "/b",
            "CONTROL_PLANE_URL": "https://a",
            "KEYVAULT_CONTROL_PLANE_URL": "https://b",
            "POD_NAME": "pod-a",
            "KEYVAULT_REPLICA_NAME": "rep-b",
        },
        {},
    ),
    (
        "alias env over yaml",
        "master_key_file: /yaml.key\ncontrol_plane_url: https://yaml\n",
        {"VAULT_MASTER_KEY_FILE": "/env.key", "CONTROL_PLANE_URL": "https://env"},
        {},
    ),
    ("alias key in yaml", "VAULT_MASTER_KEY_FILE: /y.key\n", {}, {}),
    ("passphrase env", "", {"KEYVAULT_MASTER_PASSPHRASE": "correct horse battery staple"}, {}),
    ("credential", "master_key_credential: kv.master\n", {}, {}),
    (
        "template mode octal from env json",
        "",
        {"KEYVAULT_TEMPLATES": '[{"inline": "x", "destination": "/tmp/kv-t", "mode": "0600"}]'},
        {},
    ),
    ("overrides nested", "", {}, {"rotation": {"jitter_fraction": 0, "retry_base_seconds": 10}}),
    # errors
    ("unknown yaml key", "prot: 8080\n", {}, {}),
    ("unknown nested yaml key", "tls:\n  enabld: false\n", {}, {}),
    ("unknown nested env key", "", {"KEYVAULT_TLS__ENABLD": "false"}, {}),
    ("unknown top env key ignored", "", {"KEYVAULT_PROT": "1"}, {}),
    ("bad int", "", {"KEYVAULT_PORT": "eighty"}, {}),
    ("int too big", "", {"KEYVAULT_PORT": "70000"}, {}),
    ("int fraction", "port: 80.5\n", {}, {}),
    ("empty env int", "", {"KEYVAULT_PORT": ""}, {}),
    ("bad bool", "", {"KEYVAULT_AUDIT_FSYNC": "maybe"}, {}),
    ("bad literal", "", {"KEYVAULT_TLS__CLIENT_CERT": "maybe"}, {}),
    ("bad literal log", "log_format: xml\n", {}, {}),
    ("str from int", "bind: 8080\n", {}, {}),
    ("section null", "tls: null\n", {}, {}),
    ("section list", "tls: [1]\n", {}, {}),
    ("list not list", "rotation:\n  protected_names: prod\n", {}, {}),
    (
        "many errors",
        "port: x\nworkers: 0\ntls:\n  client_cert: maybe\nuplink:\n  batch_size: 0\n",
        {"KEYVAULT_LOG_LEVEL": "LOUD"},
        {},
    ),
    ("kdf too low", "", {"KEYVAULT_KDF_ITERATIONS": "50000"}, {}),
    ("renew_at bounds", "", {"KEYVAULT_UPLINK__RENEW_AT": "1.5"}, {}),
    ("backoff model check", "", {"KEYVAULT_UPLINK__BACKOFF_CAP": "0.1"}, {}),
    (
        "tls off not loopback",
        "",
        {"KEYVAULT_TLS__ENABLED": "false", "KEYVAULT_BIND": "0.0.0.0"},
        {},
    ),
    (
        "client_cert required without tls",
        "tls:\n  enabled: false\n  client_cert: required\n",
        {},
        {},
    ),
    (
        "key and passphrase",
        "",
        {"KEYVAULT_MASTER_PASSPHRASE": "x" * 20, "VAULT_MASTER_KEY_FILE": "/k"},
        {},
    ),
    ("credential pattern", "master_key_credential: 'bad name'\n", {}, {}),
    ("replica pattern via pod", "", {"POD_NAME": "bad name!"}, {}),
    ("bad json env", "", {"KEYVAULT_WEBHOOKS": "[{"}, {}),
    ("bad json nested env", "", {"KEYVAULT_ROTATION__PROTECTED_NAMES": "prod/**"}, {}),
    (
        "dict entry env unknown key",
        "",
        {
            "KEYVAULT_ROTATION__POSTGRES__MAIN__BOGUS": "1",
            "KEYVAULT_ROTATION__POSTGRES__MAIN__DSN_FILE": "/x",
        },
        {},
    ),
    (
        "dict entry env missing required",
        "",
        {"KEYVAULT_ROTATION__POSTGRES__MAIN__PORT": "5433"},
        {},
    ),
    ("dict entry bad name", "rotation:\n  commands:\n    Bad:\n      argv: [/bin/true]\n", {}, {}),
    ("command argv empty", "rotation:\n  commands:\n    ok:\n      argv: []\n", {}, {}),
    ("command argv relative", "rotation:\n  commands:\n    ok:\n      argv: [true]\n", {}, {}),
    ("protected glob bad", "rotation:\n  protected_names: ['a//b']\n", {}, {}),
    (
        "jwt role unbound",
        "auth:\n  jwt:\n    issuers: [{name: c, issuer: i, jwks_file: /j, audiences: [a]}]\n"
        "    roles: [{name: r, issuer: c, policy: {read: ['a/**']}}]\n",
        {},
        {},
    ),
    (
        "jwt issuer skew",
        "auth:\n  jwt:\n    issuers: [{name: c, issuer: i, jwks_file: /j, audiences: [a], max_clock_skew_s: 900}]\n",
        {},
        {},
    ),
    (
        "jwt claims union bad",
        "auth:\n  jwt:\n    issuers: [{name: c, issuer: i, jwks_file: /j, audiences: [a]}]\n"
        "    roles: [{name: r, issuer: c, bound_claims: {x: 1}, policy: {read: ['a/**']}}]\n",
        {},
        {},
    ),
    ("jwt missing fields", "auth:\n  jwt:\n    issuers: [{name: c}]\n", {}, {}),
    ("webhook http", "webhooks:\n  - url: http://example.com/x\n    secret_env: S\n", {}, {}),
    (
        "template mode bad",
        "templates:\n  - inline: x\n    destination: /tmp/x\n    mode: rw\n",
        {},
        {},
    ),
    (
        "template mode world",
        "templates:\n  - inline: x\n    destination: /tmp/x\n    mode: '0666'\n",
        {},
        {},
    ),
    ("template relative", "templates:\n  - inline: x\n    destination: rel/x\n", {}, {}),
    (
        "template name pattern",
        "templates:\n  - inline: x\n    destination: /tmp/x\n    name: 'Bad Name'\n",
        {},
        {},
    ),
    (
        "template reload empty",
        "templates:\n  - inline: x\n    destination: /tmp/x\n    on_change: {command: []}\n",
        {},
        {},
    ),
    (
        "template signal bad",
        "templates:\n  - inline: x\n    destination: /tmp/x\n    on_change: {signal: {pid_file: /p, signal: SIGNOPE}}\n",
        {},
        {},
    ),
    (
        "templates share name",
        "templates:\n  - {inline: x, destination: /tmp/a/x}\n  - {inline: y, destination: /tmp/b/x}\n",
        {},
        {},
    ),
    (
        "template limits",
        "template_limits: {max_templates: 1}\ntemplates:\n  - {inline: x, destination: /tmp/a/x}\n  - {inline: y, destination: /tmp/b/y}\n",
        {},
        {},
    ),
    ("secret wrong type", "master_passphrase: 123\n", {}, {}),
    (
        "nested list item errors",
        "webhooks:\n  - {url: https://a, secret_env: S, timeout_s: 0, bogus: 1}\n",
        {},
        {},
    ),
    ("env list index", "", {"KEYVAULT_TEMPLATES__0__MODE": "0600"}, {}),
    ("empty env path", "", {"KEYVAULT_MASTER_KEY_FILE": ""}, {}),
    (
        "bare alias names",
        "",
        {
            "MASTER_PASSPHRASE": "from the bare name",
            "REPLICA_NAME": "bare-1",
            "MASTER_KEY_CREDENTIAL": "cred",
        },
        {},
    ),
    ("env section json deep", "", {"KEYVAULT_AUTH__JWT": '{"max_ttl_s": 120}'}, {}),
    ("env nested deep", "", {"KEYVAULT_AUTH__JWT__MAX_TTL_S": "120"}, {}),
    (
        "env issuers json",
        "",
        {
            "KEYVAULT_AUTH__JWT__ISSUERS": '[{"name": "c", "issuer": "i", "jwks_file": "/j", "audiences": ["a"]}]'
        },
        {},
    ),
    (
        "env dict json then entry",
        "",
        {
            "KEYVAULT_ROTATION__POSTGRES": '{"main": {"dsn_file": "/a"}}',
            "KEYVAULT_ROTATION__POSTGRES__MAIN__HOST": "h",
        },
        {},
    ),
    (
        "env entry then dict json",
        "",
        {
            "KEYVAULT_ROTATION__POSTGRES__MAIN__HOST": "h",
            "KEYVAULT_ROTATION__POSTGRES": '{"main": {"dsn_file": "/a"}}',
        },
        {},
    ),
    (
        "yaml loose scalars",
        "audit_fsync: 1\nport: 8081.0\nuplink:\n  batch_size: '7'\n",
        {"KEYVAULT_WORKERS": " 2 "},
        {},
    ),
    ("flags with a path", "", {}, {"data_dir": "/flag/dir", "port": 0, "log_level": "WARNING"}),
    (
        "env empty json list",
        "",
        {"KEYVAULT_WEBHOOKS": "[]", "KEYVAULT_ROTATION__PROTECTED_NAMES": ""},
        {},
    ),
    ("env null section", "", {"KEYVAULT_TLS": "null"}, {}),
    ("env bool words", "", {"KEYVAULT_TLS__ENABLED": "OFF", "KEYVAULT_AUDIT_FSYNC": "T"}, {}),
    ("env number words", "", {"KEYVAULT_UPLINK__BACKOFF_CAP": "inf"}, {}),
    (
        "claims via env",
        "",
        {
            "KEYVAULT_AUTH__JWT__ROLES": '[{"name": "r", "issuer": "c", "bound_claims": {"a": ["x"]}, "policy": {"read": ["a/**"]}}]',
            "KEYVAULT_AUTH__JWT__ISSUERS": '[{"name": "c", "issuer": "i", "jwks_url": "https://j", "audiences": ["a"]}]',
        },
        {},
    ),
]


# Recorded from the pydantic version (ae3dc19); kind changed: the new, deliberate result.
DEFAULTS = {
    "audit_fsync": False,
    "auth": {"jwt": {"issuers": [], "max_ttl_s": 3600, "roles": []}},
    "bind": "127.0.0.1",
    "control_plane_url": None,
    "data_dir": "keyvault-data",
    "kdf_iterations": 600000,
    "log_format": "text",
    "log_level": "INFO",
    "master_key_credential": None,
    "master_key_file": None,
    "master_passphrase": None,
    "max_body_bytes": 262144,
    "max_value_bytes": 65536,
    "metadata_key_file": None,
    "port": 8080,
    # added after the recording (issue 18, round 7): a new section with its defaults
    "read_cache": {"max_bytes": 4194304, "ttl_seconds": 300.0},
    "replica_name": None,
    "rotation": {
        "commands": {},
        "evaluation_budget_seconds": 10,
        "jitter_fraction": 0.1,
        "postgres": {},
        "protected_names": [],
        "retry_base_seconds": 60,
        "scan_interval_seconds": 60,
    },
    "shutdown_timeout": 10.0,
    "storage": {"sqlite_synchronous": "FULL", "url": None},
    "template_limits": {
        "max_rendered_bytes": 1048576,
        "max_source_bytes": 262144,
        "max_templates": 500,
        "render_budget_seconds": 2.0,
    },
    "templates": [],
    "tls": {
        "cert_file": None,
        "client_ca_file": None,
        "client_cert": "required",
        "enabled": True,
        "key_file": None,
    },
    "uplink": {
        "ack_timeout": 60.0,
        "backoff_base": 0.5,
        "backoff_cap": 60.0,
        "batch_size": 500,
        "enroll_poll_interval": 3.0,
        "heartbeat_interval": 30.0,
        "renew_at": 0.667,
        "trace_file": None,
    },
    "webhooks": [],
    "workers": 1,
}

EXPECTED = {
    "defaults": ("ok", {}),
    "full yaml": (
        "ok",
        {
            "audit_fsync": True,
            "auth": {
                "jwt": {
                    "issuers": [
                        {
                            "audiences": ["keyvault"],
                            "issuer": "https://kubernetes.default.svc",
                            "jwks_ca_file": None,
                            "jwks_file": "/etc/kv/jwks.json",
                            "jwks_refresh_s": 300,
                            "jwks_url": None,
                            "max_clock_skew_s": 30.0,
                            "name": "cluster",
                        },
                        {
                            "audiences": ["kv", "kv2"],
                            "issuer": "https://ci.example",
                            "jwks_ca_file": "/etc/kv/ci-ca.pem",
                            "jwks_file": None,
                            "jwks_refresh_s": 600.0,
                            "jwks_url": "https://ci.example/jwks",
                            "max_clock_skew_s": 60,
                            "name": "ci",
                        },
                    ],
                    "max_ttl_s": 7200,
                    "roles": [
                        {
                            "bound_claims": {},
                            "bound_subject": "system:serviceaccount:payments:api",
                            "issuer": "cluster",
                            "name": "api",
                            "policy": {"list": ["prod/**"], "read": ["prod/payments/**"]},
                            "ttl_s": 600,
                        },
                        {
                            "bound_claims": {
                                "ref": ["refs/heads/main", "refs/tags/*"],
                                "repository": "acme/api",
                            },
                            "bound_subject": None,
                            "issuer": "ci",
                            "name": "deploy",
                            "policy": {"write": ["ci/**"]},
                            "ttl_s": 900,
                        },
                    ],
                }
            },
            "bind": "0.0.0.0",
            "control_plane_url": "https://cp.example",
            "data_dir": "/srv/kv",
            "kdf_iterations": 700000,
            "log_format": "json",
            "log_level": "DEBUG",
            "master_key_file": "/srv/kv/master.key",
            "max_body_bytes": 1048576,
            "metadata_key_file": "/srv/kv/metadata.key",
            "port": 8443,
            "replica_name": "kv-0",
            "rotation": {
                "commands": {
                    "reload-app": {
                        "argv": ["/usr/bin/systemctl", "reload", "app"],
                        "timeout_seconds": 60.0,
                    }
                },
                "evaluation_budget_seconds": 5.0,
                "jitter_fraction": 0.2,
                "postgres": {
                    "main": {
                        "dbname": "app",
                        "dsn_file": "/etc/kv/pg.dsn",
                        "host": "db.internal",
                        "port": 5433,
                        "roles": ["app", "app_alt"],
                    }
                },
                "protected_names": ["prod/root/**"],
                "retry_base_seconds": 120.0,
                "scan_interval_seconds": 30.0,
            },
            "shutdown_timeout": 20.0,
            "storage": {"sqlite_synchronous": "NORMAL", "url": "postgresql+psycopg://kv@db/kv"},
            "template_limits": {
                "max_rendered_bytes": 8192,
                "max_source_bytes": 4096,
                "max_templates": 10,
                "render_budget_seconds": 1.5,
            },
            "templates": [
                {
                    "destination": "/etc/app/app.env",
                    "error_on_missing": True,
                    "group": None,
                    "inline": "A={{ secret('prod/a') }}",
                    "min_interval_ms": 200,
                    "mode": 416,
                    "name": "app.env",
                    "on_change": {
                        "command": ["/usr/bin/systemctl", "reload", "app"],
                        "signal": None,
                        "timeout_seconds": 10.0,
                    },
                    "owner": None,
                    "source": None,
                },
                {
                    "destination": "/etc/nginx/cert.pem",
                    "error_on_missing": False,
                    "group": None,
                    "inline": None,
                    "min_interval_ms": 1000,
                    "mode": 416,
                    "name": "nginx-cert",
                    "on_change": {
                        "command": None,
                        "signal": {"pid_file": "/run/nginx.pid", "signal": "SIGUSR1"},
                        "timeout_seconds": 30,
                    },
                    "owner": None,
                    "source": "/etc/kv/templates/cert.tmpl",
                },
            ],
            "tls": {
                "cert_file": "/etc/kv/server.crt",
                "client_ca_file": "/etc/kv/ca.crt",
                "client_cert": "optional",
                "enabled": True,
                "key_file": "/etc/kv/server.key",
            },
            "uplink": {
                "ack_timeout": 30.0,
                "backoff_base": 1.0,
                "backoff_cap": 30.0,
                "batch_size": 100,
                "enroll_poll_interval": 2.0,
                "heartbeat_interval": 10.0,
                "renew_at": 0.5,
                "trace_file": "/var/log/kv/uplink.jsonl",
            },
            "webhooks": [
                {
                    "names": ["prod/**"],
                    "retries": 3,
                    "secret_env": "KV_HOOK_SECRET",
                    "secret_file": None,
                    "timeout_s": 2.0,
                    "url": "https://hooks.example/kv",
                },
                {
                    "names": ["**"],
                    "retries": 5,
                    "secret_env": None,
                    "secret_file": "/etc/kv/hook.secret",
                    "timeout_s": 5,
                    "url": "http://127.0.0.1:9000/hook",
                },
            ],
            "workers": 2,
        },
    ),
    "env scalars": (
        "ok",
        {
            "audit_fsync": True,
            "data_dir": "/tmp/kvdata",
            "log_level": "ERROR",
            "port": 7001,
            "tls": {
                "cert_file": None,
                "client_ca_file": None,
                "client_cert": "none",
                "enabled": False,
                "key_file": None,
            },
            "uplink": {
                "ack_timeout": 60.0,
                "backoff_base": 0.5,
                "backoff_cap": 60.0,
                "batch_size": 42,
                "enroll_poll_interval": 3.0,
                "heartbeat_interval": 5.0,
                "renew_at": 0.667,
                "trace_file": None,
            },
        },
    ),
    "env case-insensitive": (
        "ok",
        {
            "port": 7002,
            "storage": {"sqlite_synchronous": "FULL", "url": "sqlite:////tmp/x.db"},
            "tls": {
                "cert_file": None,
                "client_ca_file": None,
                "client_cert": "optional",
                "enabled": True,
                "key_file": None,
            },
        },
    ),
    "env over yaml": (
        "ok",
        {
            "bind": "127.0.0.2",
            "port": 7100,
            "tls": {
                "cert_file": "/a.crt",
                "client_ca_file": None,
                "client_cert": "required",
                "enabled": True,
                "key_file": None,
            },
        },
    ),
    "flags over env": ("ok", {"bind": "127.0.0.3", "port": 7200}),
    "env json list and model": (
        "ok",
        {
            "rotation": {
                "commands": {},
                "evaluation_budget_seconds": 10,
                "jitter_fraction": 0.1,
                "postgres": {},
                "protected_names": ["prod/**", "ops/*"],
                "retry_base_seconds": 60,
                "scan_interval_seconds": 60,
            },
            "tls": {
                "cert_file": "/e.crt",
                "client_ca_file": None,
                "client_cert": "none",
                "enabled": True,
                "key_file": None,
            },
            "webhooks": [
                {
                    "names": ["**"],
                    "retries": 5,
                    "secret_env": "S",
                    "secret_file": None,
                    "timeout_s": 5,
                    "url": "https://h.example/x",
                }
            ],
        },
    ),
    "env dict of models": (
        "ok",
        {
            "rotation": {
                "commands": {"reload": {"argv": ["/bin/true", "x"], "timeout_seconds": 30}},
                "evaluation_budget_seconds": 10,
                "jitter_fraction": 0.1,
                "postgres": {
                    "main": {
                        "dbname": None,
                        "dsn_file": "/x",
                        "host": "h",
                        "port": 5433,
                        "roles": ["app"],
                    }
                },
                "protected_names": [],
                "retry_base_seconds": 60,
                "scan_interval_seconds": 60,
            }
        },
    ),
    "env json dict": (
        "ok",
        {
            "rotation": {
                "commands": {"reload-app": {"argv": ["/bin/true"], "timeout_seconds": 30}},
                "evaluation_budget_seconds": 10,
                "jitter_fraction": 0.25,
                "postgres": {},
                "protected_names": [],
                "retry_base_seconds": 60,
                "scan_interval_seconds": 60,
            }
        },
    ),
    "seed aliases": (
        "ok",
        {
            "control_plane_url": "https://api.keyvault.example",
            "master_key_file": "/app/config/master.key",
            "replica_name": "keyvault-1",
        },
    ),
    "prefixed aliases win": (
        "ok",
        {"control_plane_url": "https://a", "master_key_file": "/b", "replica_name": "rep-b"},
    ),
    "alias env over yaml": (
        "ok",
        {"control_plane_url": "https://env", "master_key_file": "/env.key"},
    ),
    "alias key in yaml": ("ok", {"master_key_file": "/y.key"}),
    "passphrase env": ("ok", {"master_passphrase": ["secret", "correct horse battery staple"]}),
    "credential": ("ok", {"master_key_credential": "kv.master"}),
    "template mode octal from env json": (
        "ok",
        {
            "templates": [
                {
                    "destination": "/tmp/kv-t",
                    "error_on_missing": True,
                    "group": None,
                    "inline": "x",
                    "min_interval_ms": 200,
                    "mode": 384,
                    "name": "kv-t",
                    "on_change": None,
                    "owner": None,
                    "source": None,
                }
            ]
        },
    ),
    "overrides nested": (
        "ok",
        {
            "rotation": {
                "commands": {},
                "evaluation_budget_seconds": 10,
                "jitter_fraction": 0.0,
                "postgres": {},
                "protected_names": [],
                "retry_base_seconds": 10.0,
                "scan_interval_seconds": 60,
            }
        },
    ),
    "unknown yaml key": (
        "error",
        "invalid setting prot (KEYVAULT_PROT): Extra inputs are not permitted",
    ),
    "unknown nested yaml key": (
        "error",
        "invalid setting tls.enabld (KEYVAULT_TLS__ENABLD): Extra inputs are not permitted",
    ),
    "unknown nested env key": (
        "error",
        "invalid setting tls.enabld (KEYVAULT_TLS__ENABLD): Extra inputs are not permitted",
    ),
    "unknown top env key ignored": ("ok", {}),
    "bad int": (
        "error",
        "invalid setting port (KEYVAULT_PORT): Input should be a valid integer, unable to "
        "parse string as an integer",
    ),
    "int too big": (
        "error",
        "invalid setting port (KEYVAULT_PORT): Input should be less than or equal to 65535",
    ),
    "int fraction": (
        "error",
        "invalid setting port (KEYVAULT_PORT): Input should be a valid integer, got a "
        "number with a fractional part",
    ),
    "empty env int": (
        "error",
        "invalid setting port (KEYVAULT_PORT): Input should be a valid integer, unable "
        "to parse string as an integer",
    ),
    "bad bool": (
        "error",
        "invalid setting audit_fsync (KEYVAULT_AUDIT_FSYNC): Input should be a valid "
        "boolean, unable to interpret input",
    ),
    "bad literal": (
        "error",
        "invalid setting tls.client_cert (KEYVAULT_TLS__CLIENT_CERT): Input should be "
        "'required', 'optional' or 'none'",
    ),
    "bad literal log": (
        "error",
        "invalid setting log_format (KEYVAULT_LOG_FORMAT): Input should be 'text' or 'json'",
    ),
    "str from int": (
        "error",
        "invalid setting bind (KEYVAULT_BIND): Input should be a valid string",
    ),
    "section null": (
        "error",
        "invalid setting tls (KEYVAULT_TLS): Input should be a valid dictionary or "
        "instance of TLSSettings",
    ),
    "section list": (
        "error",
        "invalid setting tls (KEYVAULT_TLS): Input should be a valid dictionary or "
        "instance of TLSSettings",
    ),
    "list not list": (
        "error",
        "invalid setting rotation.protected_names "
        "(KEYVAULT_ROTATION__PROTECTED_NAMES): Input should be a valid list",
    ),
    "many errors": (
        "error",
        "invalid setting port (KEYVAULT_PORT): Input should be a valid integer, unable "
        "to parse string as an integer; invalid setting tls.client_cert "
        "(KEYVAULT_TLS__CLIENT_CERT): Input should be 'required', 'optional' or 'none'; "
        "invalid setting workers (KEYVAULT_WORKERS): Input should be greater than or "
        "equal to 1; invalid setting log_level (KEYVAULT_LOG_LEVEL): Input should be "
        "'DEBUG', 'INFO', 'WARNING' or 'ERROR'; invalid setting uplink.batch_size "
        "(KEYVAULT_UPLINK__BATCH_SIZE): Input should be greater than or equal to 1",
    ),
    "kdf too low": (
        "error",
        "invalid setting kdf_iterations (KEYVAULT_KDF_ITERATIONS): Input should be "
        "greater than or equal to 100000",
    ),
    "renew_at bounds": (
        "error",
        "invalid setting uplink.renew_at (KEYVAULT_UPLINK__RENEW_AT): Input should "
        "be less than 0.95",
    ),
    "backoff model check": (
        "error",
        "invalid setting uplink (KEYVAULT_UPLINK): uplink.backoff_base must not "
        "be larger than uplink.backoff_cap",
    ),
    "tls off not loopback": (
        "error",
        "invalid settings: tls.enabled=false is only allowed when bind is a "
        "loopback address; bind is '0.0.0.0'",
    ),
    "client_cert required without tls": (
        "error",
        "invalid settings: tls.client_cert=required needs tls.enabled=true",
    ),
    "key and passphrase": (
        "error",
        "invalid settings: set master_key_file or master_passphrase, not both",
    ),
    "credential pattern": (
        "error",
        "invalid setting master_key_credential (KEYVAULT_MASTER_KEY_CREDENTIAL): "
        "String should match pattern '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'",
    ),
    "replica pattern via pod": (
        "error",
        "invalid setting replica_name (KEYVAULT_REPLICA_NAME): String should "
        "match pattern '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,252}$'",
    ),
    "bad json env": (
        "changed",
        "invalid setting webhooks (KEYVAULT_WEBHOOKS): not valid JSON (Expecting "
        "property name enclosed in double quotes at character 3): a list, mapping or "
        "section is given as JSON",
    ),
    "bad json nested env": (
        "changed",
        "invalid setting rotation.protected_names "
        "(KEYVAULT_ROTATION__PROTECTED_NAMES): not valid JSON (Expecting value "
        "at character 1): a list, mapping or section is given as JSON",
    ),
    "dict entry env unknown key": (
        "error",
        "invalid setting rotation.postgres.main.bogus "
        "(KEYVAULT_ROTATION__POSTGRES__MAIN__BOGUS): Extra inputs are not "
        "permitted",
    ),
    "dict entry env missing required": (
        "error",
        "invalid setting rotation.postgres.main.dsn_file "
        "(KEYVAULT_ROTATION__POSTGRES__MAIN__DSN_FILE): Field "
        "required",
    ),
    "dict entry bad name": (
        "error",
        "invalid setting rotation (KEYVAULT_ROTATION): rotation.commands name "
        "'Bad' must match ^[a-z][a-z0-9_-]{0,39}$",
    ),
    "command argv empty": (
        "error",
        "invalid setting rotation.commands.ok.argv "
        "(KEYVAULT_ROTATION__COMMANDS__OK__ARGV): List should have at least 1 "
        "item after validation, not 0",
    ),
    "command argv relative": (
        "error",
        "invalid setting rotation.commands.ok.argv.0 "
        "(KEYVAULT_ROTATION__COMMANDS__OK__ARGV__0): Input should be a valid "
        "string",
    ),
    "protected glob bad": (
        "ok",
        {
            "rotation": {
                "commands": {},
                "evaluation_budget_seconds": 10,
                "jitter_fraction": 0.1,
                "postgres": {},
                "protected_names": ["a//b"],
                "retry_base_seconds": 60,
                "scan_interval_seconds": 60,
            }
        },
    ),
    "jwt role unbound": (
        "error",
        "invalid setting auth.jwt.roles.0 (KEYVAULT_AUTH__JWT__ROLES__0): role 'r' "
        "must bind the subject or at least one claim; otherwise any token of its "
        "issuer would log in",
    ),
    "jwt issuer skew": (
        "error",
        "invalid setting auth.jwt.issuers.0.max_clock_skew_s "
        "(KEYVAULT_AUTH__JWT__ISSUERS__0__MAX_CLOCK_SKEW_S): Input should be less "
        "than or equal to 300",
    ),
    "jwt claims union bad": (
        "error",
        "invalid setting auth.jwt.roles.0.bound_claims.x.str "
        "(KEYVAULT_AUTH__JWT__ROLES__0__BOUND_CLAIMS__X__STR): Input should be "
        "a valid string; invalid setting "
        "auth.jwt.roles.0.bound_claims.x.list[str] "
        "(KEYVAULT_AUTH__JWT__ROLES__0__BOUND_CLAIMS__X__LIST[STR]): Input "
        "should be a valid list",
    ),
    "jwt missing fields": (
        "error",
        "invalid setting auth.jwt.issuers.0.issuer "
        "(KEYVAULT_AUTH__JWT__ISSUERS__0__ISSUER): Field required; invalid "
        "setting auth.jwt.issuers.0.audiences "
        "(KEYVAULT_AUTH__JWT__ISSUERS__0__AUDIENCES): Field required",
    ),
    "webhook http": (
        "error",
        "invalid setting webhooks.0 (KEYVAULT_WEBHOOKS__0): webhook "
        "'http://example.com/x': use an https:// URL (http:// only to a loopback "
        "address)",
    ),
    "template mode bad": (
        "error",
        "invalid setting templates.0 (KEYVAULT_TEMPLATES__0): mode 'rw' must be octal, e.g. '0640'",
    ),
    "template mode world": (
        "error",
        "invalid setting templates.0 (KEYVAULT_TEMPLATES__0): mode 0666 would "
        "let anyone write the file",
    ),
    "template relative": (
        "error",
        "invalid setting templates.0 (KEYVAULT_TEMPLATES__0): destination rel/x "
        "must be an absolute path",
    ),
    "template name pattern": (
        "error",
        "invalid setting templates.0.name (KEYVAULT_TEMPLATES__0__NAME): "
        "String should match pattern '^[a-z0-9][a-z0-9_.-]{0,62}$'",
    ),
    "template reload empty": (
        "error",
        "invalid setting templates.0.on_change.command "
        "(KEYVAULT_TEMPLATES__0__ON_CHANGE__COMMAND): List should have at "
        "least 1 item after validation, not 0",
    ),
    "template signal bad": (
        "error",
        "invalid setting templates.0.on_change.signal "
        "(KEYVAULT_TEMPLATES__0__ON_CHANGE__SIGNAL): signal 'SIGNOPE' is not a "
        "signal name (e.g. SIGHUP)",
    ),
    "templates share name": (
        "error",
        "invalid settings: two templates share the name x (give each a distinct name:)",
    ),
    "template limits": (
        "error",
        "invalid settings: 2 templates; template_limits.max_templates is 1",
    ),
    "secret wrong type": (
        "error",
        "invalid setting master_passphrase (KEYVAULT_MASTER_PASSPHRASE): Input "
        "should be a valid string",
    ),
    "nested list item errors": (
        "error",
        "invalid setting webhooks.0.timeout_s "
        "(KEYVAULT_WEBHOOKS__0__TIMEOUT_S): Input should be greater than 0; "
        "invalid setting webhooks.0.bogus (KEYVAULT_WEBHOOKS__0__BOGUS): "
        "Extra inputs are not permitted",
    ),
    "env list index": (
        "error",
        "invalid setting templates (KEYVAULT_TEMPLATES): Input should be a valid list",
    ),
    "empty env path": ("ok", {"master_key_file": "."}),
    "bare alias names": (
        "error",
        "invalid settings: set master_key_credential or master_passphrase, not both",
    ),
    "env section json deep": (
        "ok",
        {"auth": {"jwt": {"issuers": [], "max_ttl_s": 120, "roles": []}}},
    ),
    "env nested deep": ("ok", {"auth": {"jwt": {"issuers": [], "max_ttl_s": 120, "roles": []}}}),
    "env issuers json": (
        "ok",
        {
            "auth": {
                "jwt": {
                    "issuers": [
                        {
                            "audiences": ["a"],
                            "issuer": "i",
                            "jwks_ca_file": None,
                            "jwks_file": "/j",
                            "jwks_refresh_s": 300,
                            "jwks_url": None,
                            "max_clock_skew_s": 60,
                            "name": "c",
                        }
                    ],
                    "max_ttl_s": 3600,
                    "roles": [],
                }
            }
        },
    ),
    "env dict json then entry": (
        "ok",
        {
            "rotation": {
                "commands": {},
                "evaluation_budget_seconds": 10,
                "jitter_fraction": 0.1,
                "postgres": {
                    "main": {
                        "dbname": None,
                        "dsn_file": "/a",
                        "host": "h",
                        "port": None,
                        "roles": [],
                    }
                },
                "protected_names": [],
                "retry_base_seconds": 60,
                "scan_interval_seconds": 60,
            }
        },
    ),
    "env entry then dict json": (
        "ok",
        {
            "rotation": {
                "commands": {},
                "evaluation_budget_seconds": 10,
                "jitter_fraction": 0.1,
                "postgres": {
                    "main": {
                        "dbname": None,
                        "dsn_file": "/a",
                        "host": None,
                        "port": None,
                        "roles": [],
                    }
                },
                "protected_names": [],
                "retry_base_seconds": 60,
                "scan_interval_seconds": 60,
            }
        },
    ),
    "yaml loose scalars": (
        "ok",
        {
            "audit_fsync": True,
            "port": 8081,
            "uplink": {
                "ack_timeout": 60.0,
                "backoff_base": 0.5,
                "backoff_cap": 60.0,
                "batch_size": 7,
                "enroll_poll_interval": 3.0,
                "heartbeat_interval": 30.0,
                "renew_at": 0.667,
                "trace_file": None,
            },
            "workers": 2,
        },
    ),
    "flags with a path": ("ok", {"data_dir": "/flag/dir", "log_level": "WARNING", "port": 0}),
    "env empty json list": (
        "error",
        "invalid setting rotation.protected_names "
        "(KEYVAULT_ROTATION__PROTECTED_NAMES): Input should be a valid list",
    ),
    "env null section": ("ok", {}),
    "env bool words": (
        "ok",
        {
            "audit_fsync": True,
            "tls": {
                "cert_file": None,
                "client_ca_file": None,
                "client_cert": "required",
                "enabled": False,
                "key_file": None,
            },
        },
    ),
    "env number words": (
        "error",
        "invalid setting uplink.backoff_cap (KEYVAULT_UPLINK__BACKOFF_CAP): Input "
        "should be less than or equal to 3600",
    ),
    "claims via env": (
        "ok",
        {
            "auth": {
                "jwt": {
                    "issuers": [
                        {
                            "audiences": ["a"],
                            "issuer": "i",
                            "jwks_ca_file": None,
                            "jwks_file": None,
                            "jwks_refresh_s": 300,
                            "jwks_url": "https://j",
                            "max_clock_skew_s": 60,
                            "name": "c",
                        }
                    ],
                    "max_ttl_s": 3600,
                    "roles": [
                        {
                            "bound_claims": {"a": ["x"]},
                            "bound_subject": None,
                            "issuer": "c",
                            "name": "r",
                            "policy": {"read": ["a/**"]},
                            "ttl_s": 900,
                        }
                    ],
                }
            }
        },
    ),
}


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return ["secret", value.get_secret_value()]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.lower().startswith("keyvault_") or key.lower() in UNPREFIXED:
            monkeypatch.delenv(key)


@pytest.mark.parametrize(("name", "text", "env", "flags"), CASES, ids=[c[0] for c in CASES])
def test_same_values_and_errors_as_pydantic(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    text: str,
    env: dict[str, str],
    flags: dict[str, Any],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "agent.yaml"
    config.write_text(text, encoding="utf-8")
    kind, expected = EXPECTED[name]
    if kind == "ok":
        dumped = _plain(load_settings(AgentSettings, config, dict(flags)).model_dump())
        want = {**DEFAULTS, **expected}
        assert json.dumps(dumped, sort_keys=True) == json.dumps(want, sort_keys=True)
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(AgentSettings, config, dict(flags))
    assert caught.value.message == expected
    assert caught.value.exit_code == 78


def test_every_case_has_a_recorded_result() -> None:
    assert [c[0] for c in CASES] == list(EXPECTED)
    assert sorted(DEFAULTS) == sorted(AgentSettings.model_fields)
