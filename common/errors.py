"""The exception root of KeyVault and the errors every part shares.

Every error carries a message a person can act on, a stable machine ``code``, the HTTP status
a server answers with, and the exit status the CLI ends with. Messages never contain secret
material: callers pass names and ids, never values.
"""

from __future__ import annotations

from typing import Any


class KeyVaultError(Exception):
    """Root of every KeyVault error; safe to show to a user as one line."""

    code = "error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        """The error as the wire's ``{"error": {"code", "message"}}`` body."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ConfigError(KeyVaultError):
    """A setting is missing or invalid; the message names the key and the fix."""

    code = "config_invalid"
    exit_code = 78  # EX_CONFIG


class IntegrityError(KeyVaultError):
    """Stored or received protected data failed authentication. Deliberately opaque."""

    code = "integrity_error"
    http_status = 500
    exit_code = 65  # EX_DATAERR

    def __init__(self, message: str = "stored data failed its integrity check") -> None:
        super().__init__(message)


class ValidationError(KeyVaultError):
    """A request or argument is malformed."""

    code = "invalid_request"
    http_status = 400
    exit_code = 64  # EX_USAGE


class AuthenticationError(KeyVaultError):
    """No credentials, or credentials that are not valid."""

    code = "unauthenticated"
    http_status = 401
    exit_code = 77  # EX_NOPERM


class PermissionDeniedError(KeyVaultError):
    """Valid credentials that do not allow this operation."""

    code = "forbidden"
    http_status = 403
    exit_code = 77


class NotFoundError(KeyVaultError):
    """The object does not exist (or is not visible to the caller)."""

    code = "not_found"
    http_status = 404
    exit_code = 66  # EX_NOINPUT


class ConflictError(KeyVaultError):
    """The request conflicts with the current state (duplicate name, wrong version...)."""

    code = "conflict"
    http_status = 409
    exit_code = 65


class UnavailableError(KeyVaultError):
    """A dependency (store, audit log, network peer) cannot be used right now."""

    code = "unavailable"
    http_status = 503
    exit_code = 69  # EX_UNAVAILABLE


class PayloadTooLargeError(ValidationError):
    """The request body is larger than the server accepts."""

    code = "payload_too_large"
    http_status = 413
