"""Errors of enrollment and the uplink; each is a ``common.errors`` kind with a fix in its text."""

from __future__ import annotations

from common.errors import AuthenticationError, ConflictError


class PinMismatchError(AuthenticationError):
    """The control plane's CA is not the one the enrollment token pins.

    An authentication failure (exit 77, EX_NOPERM), not a data error: the peer could not prove
    it is the control plane the token was made for, which is what a wrong credential means.
    """

    code = "pin_mismatch"


class EnrollmentRefusedError(AuthenticationError):
    """The control plane refused the enrollment token (unknown, used, revoked or expired)."""

    code = "enrollment_refused"


class AlreadyEnrolledError(ConflictError):
    """The data folder already has an uplink identity."""

    code = "already_enrolled"
