"""Saved connections to vault agents: where each agent is and which TLS files reach it.

The list is ``$XDG_CONFIG_HOME/keyvault/agents.json`` (mode 0600, folder 0700) and holds paths
only; each agent's API token lives in the OS keyring (:mod:`apps.core.keyring_store`, service
``keyvault agent <url>``, user ``token``).
"""

from __future__ import annotations

import builtins
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from apps.core.keyring_store import CredentialStore
from apps.core.session import config_dir, write_private_json
from common.errors import ConfigError, NotFoundError, ValidationError

AGENTS_NAME = "agents.json"


def agents_path() -> Path:
    """Where the saved agent connections are kept."""
    return config_dir() / AGENTS_NAME


class AgentTokenMissingError(ConfigError):
    """A saved agent whose token is not in this keyring."""

    code = "agent_token_missing"


@dataclass(frozen=True)
class AgentProfile:
    """One agent: a name to show, its URL and the TLS files for mutual TLS (nothing secret)."""

    name: str
    url: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_form(cls, values: dict[str, str]) -> AgentProfile:
        """A profile from a connect form (name, url, and data_dir or ca/cert/key files): TLS
        paths from the agent's data folder, else the three files; a missing file, or no client
        certificate and key for an https agent, is a ``ValidationError`` tagged with its field."""
        name, url = values["name"], values["url"]
        data_dir = values.get("data_dir", "").strip()
        if data_dir:
            if not (Path(data_dir).expanduser() / "tls" / "ca.crt").is_file():
                raise ValidationError(
                    f"{data_dir} has no tls/ca.crt; is it an agent's data folder?",
                    details={"field": "data_dir"},
                )
            return cls.from_data_dir(name, url, data_dir)
        files = {k: values.get(k, "").strip() or None for k in ("ca_file", "cert_file", "key_file")}
        for key, path in files.items():
            if path and not Path(path).expanduser().is_file():
                raise ValidationError(f"no file {path}", details={"field": key})
        missing = [k for k in ("cert_file", "key_file") if not files[k]]
        if missing and url.strip().startswith("https://"):
            raise ValidationError(  # agents require mutual TLS by default: CA-only fails later
                "the agent asks for a client certificate (mutual TLS): give the client cert "
                "and key files, or the agent's data folder",
                details={"field": missing[0]},
            )
        return cls(name, url, **files)

    @classmethod
    def from_data_dir(cls, name: str, url: str, data_dir: Path | str) -> AgentProfile:
        """A profile with the TLS paths of an agent's ``tls/`` folder (ca, client cert, key)."""
        tls = Path(data_dir).expanduser().resolve() / "tls"
        return cls(
            name,
            url,
            ca_file=str(tls / "ca.crt"),
            cert_file=str(tls / "client.crt"),
            key_file=str(tls / "client.key"),
        )

    @classmethod
    def from_json(cls, doc: Any) -> AgentProfile:
        """Parse one entry of ``agents.json`` (unknown keys are ignored)."""
        if not isinstance(doc, dict):
            raise ValueError("an entry is not an object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        for key in ("name", "url"):
            if not isinstance(values.get(key), str):
                raise ValueError(f"an entry has no {key}")
        return cls(**values)

    def checked(self) -> AgentProfile:
        """The profile with name and URL trimmed; ValidationError (field name/url) if unusable."""
        name, url = self.name.strip(), self.url.strip().rstrip("/")
        if not name or len(name) > 100:
            raise ValidationError("name must be 1 to 100 characters", details={"field": "name"})
        if not url.startswith(("https://", "http://")) or len(url) <= len("https://"):
            raise ValidationError(
                f"agent URL {url!r} must start with https://", details={"field": "url"}
            )
        return AgentProfile(name, url, self.ca_file, self.cert_file, self.key_file)


class AgentDirectory:
    """The saved agent connections, with their tokens in the credential store."""

    def __init__(self, store: CredentialStore, path: Path | None = None) -> None:
        self.store = store
        self._path = path

    @property
    def path(self) -> Path:
        """The ``agents.json`` in use (resolved when first needed, so tests can move HOME)."""
        return self._path or agents_path()

    def __repr__(self) -> str:
        return f"AgentDirectory(path={str(self.path)!r})"

    def list(self) -> list[AgentProfile]:
        """Every saved agent, by name; ConfigError when the file is damaged."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or not isinstance(doc.get("agents"), list):
                raise ValueError("no agents list")
            agents = [AgentProfile.from_json(item) for item in doc["agents"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the agent list {self.path} cannot be read ({exc}); fix or delete it"
            ) from None
        return sorted(agents, key=lambda a: a.name.lower())

    def get(self, name: str) -> AgentProfile:
        """The saved agent called ``name``; NotFoundError otherwise."""
        for agent in self.list():
            if agent.name == name:
                return agent
        raise NotFoundError(f"no saved agent named {name!r}")

    def save(self, profile: AgentProfile, token: str) -> AgentProfile:
        """Add or replace an agent (by name) and keep its token in the keyring."""
        profile = profile.checked()
        if not token.strip():
            raise ValidationError("the agent token is empty", details={"field": "token"})
        self.store.set_agent_token(profile.url, token.strip())
        kept = [a for a in self.list() if a.name != profile.name]
        self._write([*kept, profile])
        return profile

    def token(self, profile: AgentProfile) -> str:
        """The agent's token from the keyring; AgentTokenMissingError when it is not there."""
        token = self.store.get_agent_token(profile.url)
        if not token:
            raise AgentTokenMissingError(
                f"no token for agent {profile.name} ({profile.url}) in the keyring; "
                "connect to it again with its token"
            )
        return token

    def remove(self, name: str) -> None:
        """Forget a saved agent and (when no other entry uses its URL) its token."""
        agents = self.list()
        gone = [a for a in agents if a.name == name]
        if not gone:
            raise NotFoundError(f"no saved agent named {name!r}")
        kept = [a for a in agents if a.name != name]
        self._write(kept)
        urls = {a.url.lower() for a in kept}
        for agent in gone:
            if agent.url.lower() not in urls:
                self.store.delete_agent_token(agent.url)

    def _write(self, agents: builtins.list[AgentProfile]) -> None:
        ordered = sorted(agents, key=lambda a: a.name.lower())
        write_private_json(self.path, {"agents": [asdict(a) for a in ordered]})
