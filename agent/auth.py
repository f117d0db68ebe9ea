"""Bearer tokens and their policies: name globs × capabilities, stored hashed.

A policy is a list of rules ``{"path": glob, "capabilities": [...]}``. In a glob, ``*`` matches
within one ``/``-separated segment, ``**`` matches across segments and ``?`` one character.
Capabilities: ``read``, ``list``, ``write``, ``rotate``, ``delete`` and ``admin`` (which
implies every other). Agent-wide operations (tokens, keys, backup) are checked as ``admin`` on
the pseudo-path ``sys/<area>``, so ``{"path": "**", "capabilities": ["admin"]}`` is a root token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.crypto import Clock, Random, utcnow
from agent.globmatch import Glob
from agent.rowauth import RowAuth
from agent.store.db import Store
from agent.store.sql import Connection
from agent.text import is_safe_line
from common.errors import (
    AuthenticationError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)

CAPABILITIES = ("read", "list", "write", "rotate", "delete", "admin")
TOKEN_PREFIX = "kvt_"  # noqa: S105 - a prefix, not a secret
_GLOB_OK = re.compile(r"^[A-Za-z0-9_.\-/*?]{1,200}$")
CACHE_SECONDS = 5.0
TOKEN_ID_RE = re.compile(r"tok_[a-z2-7]{16}")


def glob_to_regex(glob: str) -> Glob:
    """Compile a name glob (``*`` one segment, ``**`` any depth, ``?`` one character) for
    linear-time matching (RE2: a glob of many wildcards cannot make a check backtrack)."""
    return Glob(glob)


@dataclass(frozen=True)
class Rule:
    """One policy rule."""

    path: str
    capabilities: frozenset[str]
    regex: Glob = field(compare=False, repr=False)

    @classmethod
    def parse(cls, doc: Any, where: str) -> Rule:
        """Validate one rule mapping."""
        if not isinstance(doc, dict) or set(doc) != {"path", "capabilities"}:
            raise ValidationError(
                f"{where} must be an object with exactly 'path' and 'capabilities'"
            )
        path, caps = doc["path"], doc["capabilities"]
        if not isinstance(path, str) or not _GLOB_OK.fullmatch(path):
            raise ValidationError(
                f"{where}.path must be a glob of letters, digits, _ . - / * ? (1-200 characters)"
            )
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise ValidationError(f"{where}.capabilities must be a non-empty list of strings")
        unknown = sorted(set(caps) - set(CAPABILITIES))
        if unknown:
            raise ValidationError(
                f"{where}.capabilities has unknown {unknown}; use {', '.join(CAPABILITIES)}"
            )
        return cls(path, frozenset(caps), glob_to_regex(path))

    def grants(self, capability: str, name: str) -> bool:
        """Whether this rule allows ``capability`` on ``name``."""
        return (capability in self.capabilities or "admin" in self.capabilities) and bool(
            self.regex.fullmatch(name)
        )

    def to_json(self) -> dict[str, Any]:
        """The rule as stored and shown."""
        return {"path": self.path, "capabilities": sorted(self.capabilities)}


_GLOB_PARTS = re.compile(r"\*\*|\*|\?|[^*?]+")
_SQL_WILDCARDS = {"**": ".*", "*": "[^/]*", "?": "[^/]"}


def sql_regex(glob: str) -> str:
    """A glob as an anchored regex without inline flags (PostgreSQL has no ``(?s:…)``); names
    hold no newline, so ``.`` needs none."""
    body = "".join(_SQL_WILDCARDS.get(p) or re.escape(p) for p in _GLOB_PARTS.findall(glob))
    return f"^{body}$"


POLICY_MEMO = 1024  # decisions one policy remembers (a policy is immutable: no invalidation)
MEMO_NAME = 256  # names longer than this (none is valid) are not remembered


@dataclass(frozen=True)
class Policy:
    """A token's rules.

    Decisions are memoised per policy object (``(capability, name) -> bool``, at most
    :data:`POLICY_MEMO`, then forgotten at once): a policy never changes after it is parsed, and
    a token's policy is re-read with the token, so a revocation or a new policy is a new object.
    The memo holds names and booleans only, never a token or a value.
    """

    rules: tuple[Rule, ...]
    _memo: dict[tuple[str, str], bool] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @classmethod
    def parse(cls, doc: Any) -> Policy:
        """Validate a list of rules."""
        if not isinstance(doc, list) or not doc or len(doc) > 100:
            raise ValidationError("policy must be a list of 1-100 rules")
        return cls(tuple(Rule.parse(r, f"policy[{i}]") for i, r in enumerate(doc)))

    @classmethod
    def root(cls) -> Policy:
        """Everything, everywhere."""
        return cls.parse([{"path": "**", "capabilities": ["admin"]}])

    def allows(self, capability: str, name: str) -> bool:
        """Whether any rule grants ``capability`` on ``name``."""
        key = (capability, name)
        hit = self._memo.get(key)
        if hit is None:
            hit = any(rule.grants(capability, name) for rule in self.rules)
            self._remember(key, hit)
        return hit

    def _remember(self, key: tuple[str, str], decision: bool) -> None:
        if len(key[1]) > MEMO_NAME:  # longer than any valid name: decided, not remembered
            return
        if len(self._memo) >= POLICY_MEMO:
            self._memo.clear()
        self._memo[key] = decision

    def patterns(self, capability: str) -> list[str]:
        """The regular expressions of the names ``capability`` is granted on, in the dialect
        both SQL backends read (PostgreSQL ``~`` and Python's ``re`` behind SQLite's REGEXP)."""
        return [
            sql_regex(rule.path)
            for rule in self.rules
            if capability in rule.capabilities or "admin" in rule.capabilities
        ]

    def sees(self, name: str) -> bool:
        """Whether any rule grants anything at all on ``name`` (it may know the name exists)."""
        key = ("", name)  # "" is no capability: the key of "any capability"
        hit = self._memo.get(key)
        if hit is None:
            hit = any(rule.regex.fullmatch(name) for rule in self.rules)  # any capability
            self._remember(key, hit)
        return hit

    def to_json(self) -> list[dict[str, Any]]:
        """The policy as stored and shown."""
        return [r.to_json() for r in self.rules]


@dataclass(frozen=True)
class Token:
    """An authenticated caller."""

    id: str
    name: str
    policy: Policy
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None

    def require(self, capability: str, name: str) -> None:
        """Raise 403 unless the policy allows ``capability`` on ``name``."""
        if not self.policy.allows(capability, name):
            raise PermissionDeniedError(
                f"this token may not {capability} {name!r}; ask an admin for a token whose "
                "policy grants it"
            )

    def to_json(self) -> dict[str, Any]:
        """Public description (never the token itself)."""
        return {
            "id": self.id,
            "name": self.name,
            "policy": self.policy.to_json(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


def hash_token(secret: str) -> str:
    """SHA-256 of a token (tokens are 256-bit random, so a fast hash is right)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _row_to_token(row: Any, rows: RowAuth) -> Token:
    rows.check_token(row._mapping)
    return Token(
        id=row.id,
        name=row.name,
        policy=Policy.parse(json.loads(row.policy)),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class TokenService:
    """Create, check, list and revoke bearer tokens."""

    def __init__(
        self, store: Store, rows: RowAuth, *, clock: Clock = utcnow, rng: Random = os.urandom
    ) -> None:
        self.store = store
        self.rows = rows
        self._clock = clock
        self._rng = rng
        self._cache: dict[str, tuple[float, Token]] = {}
        self._epoch = 0  # bumped by forget_cached: a row read before it is not cached
        self.catch_up: Callable[[], None] = _nothing  # set by worker processes (agent/workers.py)

    def forget_cached(self) -> None:
        """Drop every cached token (another worker process changed the store)."""
        self._epoch += 1
        self._cache.clear()

    def new_token(
        self, name: str, policy: Policy, ttl: timedelta | None = None
    ) -> tuple[str, dict[str, Any], Token]:
        """Mint a token: (secret shown once, row to insert, token)."""
        if not isinstance(name, str) or not 1 <= len(name) <= 100 or not is_safe_line(name):
            raise ValidationError(
                "token name must be 1-100 characters without control or invisible format characters"
            )
        if ttl is not None and ttl.total_seconds() <= 0:
            raise ValidationError("token ttl must be positive")
        secret = TOKEN_PREFIX + base64.urlsafe_b64encode(self._rng(32)).decode().rstrip("=")
        token_id = "tok_" + base64.b32encode(self._rng(10)).decode().lower()
        now = self._clock()
        token = Token(
            token_id, name, policy, now.isoformat(), (now + ttl).isoformat() if ttl else None
        )
        row = {
            "id": token.id,
            "name": name,
            "token_hash": hash_token(secret),
            "policy": json.dumps(policy.to_json()),
            "created_at": token.created_at,
            "expires_at": token.expires_at,
        }
        row["mac"] = self.rows.token_mac(row)
        return secret, row, token

    async def create(
        self, name: str, policy: Policy, ttl: timedelta | None = None
    ) -> tuple[str, Token]:
        """Create and store a token; returns (secret, token)."""
        secret, row, token = self.new_token(name, policy, ttl)
        await self.store.write(lambda conn: _insert_token(conn, row))
        return secret, token

    def create_sync(
        self, name: str, policy: Policy, ttl: timedelta | None = None
    ) -> tuple[str, Token]:
        """Blocking :meth:`create` for offline tools."""
        secret, row, token = self.new_token(name, policy, ttl)
        self.store.write_sync(lambda conn: _insert_token(conn, row))
        return secret, token

    def cached(self, header: str | None) -> Token | None:
        """The live token an ``Authorization`` header names, when the answer is in the cache
        (fresh, not revoked, not expired); None when :meth:`authenticate` must decide."""
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.startswith(TOKEN_PREFIX):
            return None
        hit = self._cache.get(hash_token(secret.strip()))
        if hit is None or time.monotonic() - hit[0] >= CACHE_SECONDS:
            return None
        token = hit[1]
        if token.revoked_at or (
            token.expires_at and datetime.fromisoformat(token.expires_at) <= self._clock()
        ):
            return None
        return token

    async def authenticate(self, header: str | None) -> Token:
        """Resolve an ``Authorization: Bearer …`` header to a live token, or raise 401."""
        if not header:
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.startswith(TOKEN_PREFIX):
            raise AuthenticationError("malformed Authorization header: expected 'Bearer kvt_…'")
        digest = hash_token(secret.strip())
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and now - cached[0] < CACHE_SECONDS:
            token = cached[1]
        else:
            epoch = self._epoch
            try:
                token = await self.store.read(_by_hash(digest, self.rows))
            except IntegrityError:  # a row the agent did not write (reported by RowAuth)
                raise AuthenticationError("unknown or revoked token") from None
            if token is None:
                raise AuthenticationError("unknown or revoked token")
            if len(self._cache) > 10_000:
                self._cache.clear()
            self.catch_up()
            if epoch == self._epoch:
                self._cache[digest] = (now, token)
        if token.revoked_at:
            raise AuthenticationError("unknown or revoked token")
        if token.expires_at and datetime.fromisoformat(token.expires_at) <= self._clock():
            raise AuthenticationError("this token has expired; ask an admin for a new one")
        return token

    async def list(self) -> list[Token]:
        """Every token, newest first."""

        def q(conn: Connection) -> list[Token]:
            rows = conn.execute(_SELECT_TOKENS + "ORDER BY created_at DESC").all()
            out = []
            for row in rows:
                try:
                    out.append(_row_to_token(row, self.rows))
                except IntegrityError:  # reported by RowAuth; never shown as a token
                    continue
            return out

        return await self.store.read(q)

    async def revoke(self, token_id: str) -> Token:
        """Revoke a token; takes effect on this agent at once."""
        now = self._clock().isoformat()

        def txn(conn: Connection) -> Token:
            row = conn.execute(_SELECT_TOKENS + "WHERE id = ?", (token_id,)).one_or_none()
            if row is None:
                raise NotFoundError(f"no token with id {token_id!r}")
            token = _row_to_token(row, self.rows)
            if not row.revoked_at:
                revoked = {**row._mapping, "revoked_at": now}
                conn.execute(
                    "UPDATE kv_tokens SET revoked_at = ?, mac = ? WHERE id = ?",
                    (now, self.rows.token_mac(revoked), token_id),
                )
            return token

        token = await self.store.write(txn)
        self._cache.clear()
        return token


# the kv_tokens columns, in the table's order (rows are read with their names)
_TOKEN_COLUMNS = (
    "id",
    "name",
    "token_hash",
    "policy",
    "created_at",
    "expires_at",
    "revoked_at",
    "mac",
)
_SELECT_TOKENS = f"SELECT {', '.join(_TOKEN_COLUMNS)} FROM kv_tokens "  # noqa: S608
_INSERTED = ("id", "name", "token_hash", "policy", "created_at", "expires_at", "mac")
_INSERT_TOKEN = (
    f"INSERT INTO kv_tokens ({', '.join(_INSERTED)}) VALUES ({', '.join('?' * len(_INSERTED))})"  # noqa: S608
)


def _insert_token(conn: Connection, row: dict[str, Any]) -> None:
    """Store a new token's row (as :meth:`TokenService.new_token` built it)."""
    conn.execute(_INSERT_TOKEN, [row[column] for column in _INSERTED])


def _nothing() -> None:
    """The default :attr:`TokenService.catch_up`: one process, nothing to catch up with."""


def _by_hash(digest: str, rows: RowAuth) -> Any:
    def q(conn: Connection) -> Token | None:
        row = conn.execute(_SELECT_TOKENS + "WHERE token_hash = ?", (digest,)).one_or_none()
        return _row_to_token(row, rows) if row else None

    return q
