"""``WebConfig``: what one running web app needs to know, and where its session-signing secret comes from.

    config = WebConfig()                                   # every default (below)
    config = WebConfig(db_url="postgresql://host/lab", web_dir="runs/lab-web", secure_cookies=True)
    key = config.secret()                                  # EMBEDLAB_SECRET_KEY, else <web dir>/secret_key

| field            | default                                   | meaning                                               |
|------------------|-------------------------------------------|-------------------------------------------------------|
| db_url           | embedlab.settings.results_db_url()        | the results store; the accounts tables live there too |
| web_dir          | $EMBEDLAB_WEB_DIR, else runs/web          | uploads, projects, the generated secret key           |
| secret_key       | None: $EMBEDLAB_SECRET_KEY, else the file | signs the session cookies (>= 32 characters)          |
| executor         | local                                     | local / ray: what the job pages launch jobs with      |
| ray_address      | None                                      | the Ray cluster for executor=ray (None: a local Ray)  |
| demo_models      | ()                                        | model folders (or folders of them) for the demo page  |
| max_upload_bytes | 256 MiB                                   | request body limit, enforced while the body streams   |
| secure_cookies   | False                                     | session cookie only over HTTPS (set behind TLS)       |
| session_max_age_s| 12 h                                      | a session cookie older than this is refused           |
| login_failures   | 5 per login_window_s (60 s)               | failed logins per user name + address before a 429    |

There is no hard-coded secret: without EMBEDLAB_SECRET_KEY a random key is generated on first start and kept in
``<web dir>/secret_key`` (mode 0600), so sessions survive a restart; delete the file to log everybody out. This
module reads and creates that one file; it opens no database.
"""
from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..errors import ConfigError
from ..settings import results_db_url

log = logging.getLogger("embedlab.web")

SECRET_ENV = "EMBEDLAB_SECRET_KEY"
WEB_DIR_ENV = "EMBEDLAB_WEB_DIR"
MIN_SECRET_CHARS = 32


def default_web_dir() -> Path:
    return Path(os.environ.get(WEB_DIR_ENV) or "runs/web").expanduser()


class WebConfig(BaseModel):
    """Settings of one web app (see the module docstring for each field)."""

    model_config = ConfigDict(frozen=True)

    db_url: str = Field(default_factory=results_db_url)
    web_dir: Path = Field(default_factory=default_web_dir)
    secret_key: SecretStr | None = None
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    demo_models: tuple[Path, ...] = ()  # with $EMBEDLAB_DEMO_MODELS: what the demo page offers beside web_dir/models
    max_upload_bytes: int = Field(256 * 1024 * 1024, gt=0)
    secure_cookies: bool = False
    session_max_age_s: int = Field(12 * 3600, gt=0)
    login_failures: int = Field(5, gt=0)
    login_window_s: int = Field(60, gt=0)

    @field_validator("db_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return results_db_url(value)  # a plain path becomes a sqlite:/// URL, as for the CLI's --db

    def secret(self) -> str:
        """The session-signing key: ``secret_key``, else $EMBEDLAB_SECRET_KEY, else ``<web dir>/secret_key`` (created
        with a new random key, mode 0600, the first time)."""
        if self.secret_key is not None:
            return _checked(self.secret_key.get_secret_value(), "secret_key")
        env = os.environ.get(SECRET_ENV)
        if env:
            return _checked(env, SECRET_ENV)
        return load_or_create_secret(self.web_dir / "secret_key")


def _checked(key: str, where: str) -> str:
    if len(key) < MIN_SECRET_CHARS:
        raise ConfigError(f"{where}: the session secret must be at least {MIN_SECRET_CHARS} characters (e.g. "
                          f"python -c 'import secrets; print(secrets.token_urlsafe(48))')")
    return key


def load_or_create_secret(path: Path) -> str:
    """Read the key in ``path``, or create the file with a new random key (mode 0600: never readable by other
    users)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"web folder {path.parent}: cannot create it ({e.strerror or e}); give another with "
                          f"--web-dir or {WEB_DIR_ENV}") from None
    if not path.exists() and not path.is_symlink():
        # Written whole to a private temp file, then hard-linked into place: link() fails if the name exists, so two
        # servers starting at once agree on one key, and nobody ever reads a half-written one.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
            os.link(tmp, path)
            log.info("generated a new session secret in %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    if path.is_symlink() or not path.is_file():
        raise ConfigError(f"session secret {path} is not a plain file; remove it (a new key is generated)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Anyone who can read the key can forge a session for any user, the admin included.
        raise ConfigError(f"session secret {path} is readable by other users (mode {mode:o}); "
                          f"run: chmod 600 {path}")
    key = path.read_text(encoding="utf-8").strip()
    return _checked(key, str(path))
