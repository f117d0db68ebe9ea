"""The ``postgres`` rotator: change a role's password with ``ALTER ROLE``, prove it by logging in.

The admin DSN is read from the connection's ``dsn_file`` at each use. The password is hashed
client-side (``PQencryptPasswordConn``, the server's ``password_encryption``) so the statement
the server sees, and may log, holds a verifier, never the password. Errors keep only SQLSTATEs.

With ``alternate_role`` the secret's value is ``{"username", "password"}`` JSON and each
rotation changes the role that is *not* in the current value, so the live login never breaks.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from agent.rotation._base import (
    AUTHENTICATION_FAILED,
    CONNECTION_NOT_CONFIGURED,
    DATABASE_UNREACHABLE,
    INTERNAL_ERROR,
    INVALID_SETTINGS,
    VERIFICATION_FAILED,
    RotationError,
)
from agent.rotation._random import Generator, reject_unknown
from agent.settings import PostgresConnection

KEYS = frozenset({"connection", "role", "alternate_role", "length"})
CONNECT_TIMEOUT = 10
_NOT_FOR_VERIFY = ("user", "password", "passfile", "sslcert", "sslkey", "sslpassword")


def _role(settings: dict[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None and key == "alternate_role":
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 63 or "\x00" in value:
        raise RotationError(INVALID_SETTINGS, f"{key} must be a role name of 1 to 63 characters")
    return value


def _classify(exc: psycopg.Error, *, login_rejected: str) -> RotationError:
    """Map a psycopg error to a reason without keeping its text (it may quote a DSN)."""
    state = exc.sqlstate or ""
    text = str(exc).lower()
    kind = type(exc).__name__
    if state.startswith("28") or "authentication failed" in text or "pg_hba.conf" in text:
        return RotationError(login_rejected, f"login rejected ({kind} {state})".strip())
    if state == "42704":
        return RotationError(INVALID_SETTINGS, "the role does not exist")
    if state == "42501":
        return RotationError(AUTHENTICATION_FAILED, "the admin may not alter this role")
    if isinstance(exc, psycopg.OperationalError):
        return RotationError(DATABASE_UNREACHABLE, f"{kind} {state}".strip())
    if isinstance(exc, psycopg.ProgrammingError) and not state:
        return RotationError(CONNECTION_NOT_CONFIGURED, "the DSN is not valid")
    return RotationError(INTERNAL_ERROR, f"{kind} {state}".strip())


class PostgresRotator:
    """Rotates a PostgreSQL role's password (or alternates between two roles)."""

    def __init__(self, settings: dict[str, Any], connection: PostgresConnection, name: str) -> None:
        reject_unknown(settings, KEYS)
        self.name = name
        self.connection = connection
        self.role = _role(settings, "role") or ""
        self.alternate_role = _role(settings, "alternate_role")
        if self.alternate_role == self.role:
            raise RotationError(INVALID_SETTINGS, "alternate_role must differ from role")
        length = {"length": settings["length"]} if "length" in settings else {}
        self.generator = Generator.parse({**length, "classes": "lud"})

    def __repr__(self) -> str:
        return (
            f"PostgresRotator(connection={self.name!r}, role={self.role!r}, "
            f"alternate_role={self.alternate_role!r})"
        )

    # Rotator -----------------------------------------------------------------
    def generate(self, current: str | None) -> str:
        """A new password; with alternating users, JSON naming the idle role."""
        password = self.generator.new_value()
        if self.alternate_role is None:
            return password
        return json.dumps({"username": self._idle_role(current), "password": password})

    def apply(self, new: str, current: str | None) -> None:
        """``ALTER ROLE`` the role named by ``new`` to its password."""
        role, password = self._login_of(new)
        self._set_password(role, password)

    def verify(self, new: str) -> None:
        """Log in afresh as the role with the new password.

        A server that let the login in without asking for the password (``trust`` in
        ``pg_hba.conf``) proves nothing about it, so that counts as a failed verification.
        """
        role, password = self._login_of(new)
        params = {k: v for k, v in self._verify_params().items() if k not in _NOT_FOR_VERIFY}
        error: RotationError | None = None
        try:
            with psycopg.connect(
                **params, user=role, password=password, connect_timeout=CONNECT_TIMEOUT
            ) as conn:
                conn.execute("SELECT 1")
                if not conn.pgconn.used_password:
                    error = RotationError(
                        VERIFICATION_FAILED, "the server did not ask for the password (trust)"
                    )
        except psycopg.Error as exc:
            error = _classify(exc, login_rejected=VERIFICATION_FAILED)
        if error is not None:
            raise error

    def revert(self, current: str | None, new: str) -> None:
        """Put the old password back (single role, when there was one).

        With alternating users the live role was never changed; the idle one keeps its new
        password, which nobody uses, so there is nothing to undo.
        """
        if current is None or self.alternate_role is not None:
            return
        self._set_password(self.role, current)

    # Helpers -----------------------------------------------------------------
    def _login_of(self, value: str) -> tuple[str, str]:
        """(role, password) a value stands for."""
        if self.alternate_role is None:
            return self.role, value
        try:
            doc = json.loads(value)
        except ValueError:
            doc = None
        if (
            not isinstance(doc, dict)
            or doc.get("username") not in (self.role, self.alternate_role)
            or not isinstance(doc.get("password"), str)
        ):
            raise RotationError(
                INVALID_SETTINGS, "the value is not {username, password} JSON of a configured role"
            )
        return doc["username"], doc["password"]

    def _idle_role(self, current: str | None) -> str:
        if current is None:
            return self.role
        live, _ = self._login_of(current)
        return self.alternate_role if live == self.role and self.alternate_role else self.role

    def _dsn(self) -> str:
        try:
            dsn = self.connection.dsn_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            dsn = ""
        if not dsn:
            raise RotationError(
                CONNECTION_NOT_CONFIGURED, f"dsn_file of connection {self.name!r} is unreadable"
            )
        return dsn

    def _verify_params(self) -> dict[str, Any]:
        error: RotationError | None = None
        try:
            params: dict[str, Any] = conninfo_to_dict(self._dsn())
        except psycopg.Error as exc:
            error = _classify(exc, login_rejected=AUTHENTICATION_FAILED)
        if error is not None:
            raise error
        for key in ("host", "port", "dbname"):
            if getattr(self.connection, key) is not None:
                params[key] = str(getattr(self.connection, key))
        return params

    def _set_password(self, role: str, password: str) -> None:
        dsn = self._dsn()
        error: RotationError | None = None
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                verifier = conn.pgconn.encrypt_password(password.encode(), role.encode())
                statement = sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(role))
                psycopg.ClientCursor(conn).execute(statement, [verifier.decode()])
        except psycopg.Error as exc:
            error = _classify(exc, login_rejected=AUTHENTICATION_FAILED)
        if error is not None:
            raise error
