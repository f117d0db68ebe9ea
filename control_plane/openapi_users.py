"""The user-management part of the OpenAPI document (roles, removal, passwords, sessions)."""

from __future__ import annotations

from control_plane.openapi_kit import INT, STR, J, _json, _obj, _op, _path, _ref

ROLE: J = {"enum": ["viewer", "operator", "admin", "owner"]}
SESSION: J = _obj(
    {
        "id": STR,
        "user_id": STR,
        "created_at": STR,
        "expires_at": STR,
        "current": {"type": "boolean"},
    },
    ["id", "user_id", "created_at", "expires_at", "current"],
)
SESSIONS: J = _json(_obj({"items": {"type": "array", "items": SESSION}}, ["items"]), "sessions")
ENDED: J = _json(_obj({"ended": INT}, ["ended"]), "how many sessions ended")
USER_ID = [_path("user_id")]
SESSION_ID = [_path("user_id"), _path("session_id")]


SSO_CONFIG: J = _obj(
    {
        "issuer": STR,
        "client_id": STR,
        "native_client_secret": {"type": ["string", "null"]},
        "groups_claim": STR,
        "role_map": {"type": "object", "additionalProperties": ROLE},
        "require_sso": {"type": "boolean"},
    },
    ["issuer", "client_id", "role_map"],
)


def sso_paths() -> J:
    """Paths of single sign-on."""
    return {
        "/auth/sso/{org_id}": {
            "get": _op(
                "ssoConfig",
                "The organisation's OpenID provider and client id (to start a login)",
                {
                    "200": _json(
                        _obj({"issuer": STR, "client_id": STR, "client_secret": STR}),
                        "provider",
                    )
                },
                "404",
                params=[_path("org_id")],
                secure=False,
            )
        },
        "/auth/sso/{org_id}/start": {
            "post": _op(
                "ssoStart",
                "Start a login: the provider, and a single-use login id with the nonce to send it",
                {
                    "200": _json(
                        _obj(
                            {
                                "issuer": STR,
                                "client_id": STR,
                                "client_secret": STR,
                                "login_id": STR,
                                "nonce": STR,
                                "expires_in": INT,
                            },
                            ["issuer", "client_id", "login_id", "nonce", "expires_in"],
                        ),
                        "a login in progress",
                    )
                },
                "404 429",
                params=[_path("org_id")],
                secure=False,
            )
        },
        "/auth/sso": {
            "post": _op(
                "ssoLogin",
                "Log in with an ID token of the organisation's provider, issued for a started "
                "login (its nonce)",
                {"200": _json({"type": "object"}, "a new session")},
                "401 404 429",
                body=_obj(
                    {"org_id": STR, "id_token": STR, "login_id": STR},
                    ["org_id", "id_token", "login_id"],
                ),
                secure=False,
            )
        },
        "/org/sso": {
            "put": _op(
                "setSso",
                "Trust an OpenID provider, map its groups to roles, require it or not",
                {"200": _json(SSO_CONFIG, "the configuration")},
                body=SSO_CONFIG,
            ),
            "get": _op(
                "getSso",
                "The single sign-on configuration",
                {"200": _json(SSO_CONFIG, "it")},
                "404",
            ),
        },
    }


def users_paths() -> J:
    """Paths (without the /api/v1 prefix) of user management and single sign-on."""
    return {
        **sso_paths(),
        "/users/{user_id}/role": {
            "put": _op(
                "setUserRole",
                "Change a user's role (never above yours; the last owner stays owner)",
                {"200": _json(_ref("User"), "the user")},
                "404 409",
                body=_obj({"role": ROLE}, ["role"]),
                params=USER_ID,
            )
        },
        "/users/{user_id}": {
            "delete": _op(
                "removeUser",
                "Remove a user and end their sessions (not the last owner)",
                {"204": {"description": "removed"}},
                "404 409",
                params=USER_ID,
            )
        },
        "/users/{user_id}/password-reset": {
            "post": _op(
                "resetPassword",
                "Lock a user's password, end their sessions, return a reset token (shown once)",
                {"201": _json(_obj({"user_id": STR, "token": STR, "expires_at": STR}), "reset")},
                "404",
                params=USER_ID,
            )
        },
        "/password-resets/complete": {
            "post": _op(
                "completePasswordReset",
                "Choose a new password with a reset token",
                {"204": {"description": "the password is set"}},
                "404 429",
                body=_obj({"token": STR, "password": STR}, ["token", "password"]),
                secure=False,
            )
        },
        "/users/{user_id}/sessions": {
            "get": _op(
                "listUserSessions",
                "A user's live sessions",
                {"200": SESSIONS},
                "404",
                params=USER_ID,
            ),
            "delete": _op(
                "endUserSessions",
                "End all of a user's sessions",
                {"200": ENDED},
                "404",
                params=USER_ID,
            ),
        },
        "/users/{user_id}/sessions/{session_id}": {
            "delete": _op(
                "endUserSession",
                "End one session of a user",
                {"200": ENDED},
                "404",
                params=SESSION_ID,
            ),
        },
        "/me/password": {
            "put": _op(
                "changePassword",
                "Change your password; your other sessions end",
                {"200": _json(_obj({"sessions_ended": INT}), "changed")},
                "429",
                body=_obj(
                    {"current_password": STR, "new_password": STR},
                    ["current_password", "new_password"],
                ),
            )
        },
        "/me/sessions": {
            "get": _op("listMySessions", "Your live sessions", {"200": SESSIONS}),
            "delete": _op("endMySessions", "End all your sessions (this one too)", {"200": ENDED}),
        },
        "/me/sessions/{session_id}": {
            "delete": _op(
                "endMySession",
                "End one of your sessions",
                {"200": ENDED},
                "404",
                params=[_path("session_id")],
            ),
        },
    }
