"""The control plane's exception root and the errors only it raises."""

from __future__ import annotations

from common.errors import KeyVaultError


class ControlPlaneError(KeyVaultError):
    """Root of every error the control plane raises itself."""

    code = "control_plane_error"


class RateLimitedError(ControlPlaneError):
    """Too many attempts; the caller must wait ``retry_after`` seconds."""

    code = "rate_limited"
    http_status = 429
    exit_code = 75  # EX_TEMPFAIL

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(
            message or f"too many failed attempts; try again in {self.retry_after} seconds",
            details={"retry_after": self.retry_after},
        )


class EnrollmentError(ControlPlaneError):
    """An enrollment token is unknown, used, revoked or expired (deliberately one answer)."""

    code = "enrollment_refused"
    http_status = 401
    exit_code = 77

    def __init__(
        self, message: str = "the enrollment token is unknown, already used, revoked or expired"
    ) -> None:
        super().__init__(message)


class UplinkRefusedError(ControlPlaneError):
    """An agent's uplink is refused; ``code`` is one of ``common.uplink``'s ``ERR_…`` values."""

    http_status = 403
    exit_code = 77

    def __init__(self, code: str, message: str, *, http_status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class OutboundRefused(ControlPlaneError):
    """A URL an admin supplied may not be fetched (scheme, address, redirect or size); the
    message names what and the setting that would allow it (``control_plane/outbound.py``)."""

    code = "invalid_request"  # the caller's input is what is wrong
    http_status = 400
    exit_code = 64  # EX_USAGE
