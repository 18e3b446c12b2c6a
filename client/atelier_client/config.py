"""Where the API is and which key to use: arguments first, then ``ATELIER_URL`` /
``ATELIER_API_KEY``, then the config file that ``atelier login`` writes
(``$ATELIER_CONFIG``, else ``$XDG_CONFIG_HOME/atelier/config.toml``, else
``~/.config/atelier/config.toml``), created with mode 0600. The stored key is used only with the
stored URL, so pointing ``ATELIER_URL`` elsewhere never sends it to another server."""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from atelier_client.errors import ConfigError

URL_ENV = "ATELIER_URL"
KEY_ENV = "ATELIER_API_KEY"
CONFIG_ENV = "ATELIER_CONFIG"
XDG_CONFIG_ENV = "XDG_CONFIG_HOME"
CONFIG_DIR_NAME = "atelier"
CONFIG_FILE_NAME = "config.toml"
FILE_MODE = 0o600
DIR_MODE = 0o700
URL_FIELD = "url"
KEY_FIELD = "api_key"


@dataclass(frozen=True)
class Credentials:
    """The API's base URL and the key sent as ``Authorization: Bearer``."""

    url: str
    api_key: str = ""

    def __repr__(self) -> str:
        return f"Credentials(url={self.url!r}, api_key={'***' if self.api_key else ''!r})"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file's path, from the environment."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = Path(env[XDG_CONFIG_ENV]).expanduser() if env.get(XDG_CONFIG_ENV) else Path.home() / ".config"
    return base / CONFIG_DIR_NAME / CONFIG_FILE_NAME


def read_config(path: Path) -> dict[str, str]:
    """The config file's string fields; {} when there is none. An unreadable file is a ConfigError."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _toml_string(value: str) -> str:
    # JSON's string escapes (\" \\ \n \uXXXX ...) are all valid in a TOML basic string.
    return json.dumps(value)


def write_config(path: Path, credentials: Credentials) -> None:
    """Write the config file atomically, readable by its owner only (0600; its folder 0700 when created)."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    text = (
        "# Written by `atelier login`. Holds an API key: keep it private.\n"
        f"{URL_FIELD} = {_toml_string(credentials.url)}\n"
        f"{KEY_FIELD} = {_toml_string(credentials.api_key)}\n"
    )
    fd, temp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)  # mkstemp creates it 0600
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def resolve(
    url: str | None = None,
    api_key: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Credentials:
    """The URL and key to use: arguments, else the environment, else the config file."""
    env = os.environ if env is None else env
    url = url or env.get(URL_ENV) or None
    api_key = api_key or env.get(KEY_ENV) or None
    if url is None or api_key is None:
        stored = read_config(path or config_path(env))
        stored_url = (stored.get(URL_FIELD) or "").rstrip("/") or None
        url = url or stored_url
        # The stored key was checked against the stored URL: it is never sent to another server.
        if api_key is None and url is not None and url.rstrip("/") == stored_url:
            api_key = stored.get(KEY_FIELD) or None
    if url is None:
        raise ConfigError(f"no API URL: run `atelier login`, or set {URL_ENV}")
    if api_key is None:
        raise ConfigError(f"no API key for {url}: run `atelier login --url {url}`, or set {KEY_ENV}")
    return Credentials(url=url.rstrip("/"), api_key=api_key)
