"""Where the portal is and who we are: flags, then the environment, then a config file."""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(Exception):
    """The URL or token is missing or the config file is unusable (exit 78)."""


@dataclass(frozen=True)
class Config:
    url: str
    token: str


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "portalctl" / "config.toml"


def _file_values(path: Path, *, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: no such config file")
        return {}
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Like ssh with a private key: a token others can read is a token others have.
        raise ConfigError(f"{path} holds a token and is readable by others: chmod 600 {path}")
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    unknown = set(values) - {"url", "token"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))} (url, token)")
    return values


def config_resolve(
    *, url: str | None, token: str | None, config_file: str | None, environ: dict[str, str]
) -> Config:
    """Each value from the first place that has it: the flag, PORTALCTL_URL /
    PORTALCTL_TOKEN, then the config file (--config, PORTALCTL_CONFIG, or
    ~/.config/portalctl/config.toml)."""
    named = config_file or environ.get("PORTALCTL_CONFIG")
    path = Path(named) if named else default_config_path()
    values: dict = {}
    if not (url or environ.get("PORTALCTL_URL")) or not (token or environ.get("PORTALCTL_TOKEN")):
        values = _file_values(path, required=bool(named))
    url = url or environ.get("PORTALCTL_URL") or values.get("url")
    token = token or environ.get("PORTALCTL_TOKEN") or values.get("token")
    if not url:
        raise ConfigError(f"no portal URL: give --url, set PORTALCTL_URL or url in {path}")
    if not token:
        raise ConfigError(
            'no token: create one on the portal\'s "My tokens" page, then set '
            f"PORTALCTL_TOKEN or token in {path}"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the portal URL must start with http:// or https://: {url!r}")
    return Config(url=url.rstrip("/"), token=token)
