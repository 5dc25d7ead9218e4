"""Secrets (tokens, passwords) come from systemd credentials or the environment, never the config.

A config names *where* a secret is, with a ``*_credential`` key (a file of that name in
``$CREDENTIALS_DIRECTORY``, which systemd fills from ``LoadCredential=`` or
``LoadCredentialEncrypted=``) or a ``*_env`` key (an environment variable). The config loader
rejects inline secrets; this module reads them when a service starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from daq.errors import ConfigError

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"


def resolve_secret(
    env: str | None,
    credential: str | None,
    what: str,
    *,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Return the secret named by ``credential`` (preferred) or ``env``.

    ``what`` names the secret in messages (``"sinks[0] token"``). Raises
    :class:`~daq.errors.ConfigError` when neither is given, when both are, when the
    credential file or variable is missing, or when the secret is empty. Trailing newlines
    (as ``echo`` writes them into a credential file) are stripped; nothing else is.
    """
    environ = os.environ if environ is None else environ
    if env and credential:
        raise ConfigError(f"{what}: give either an environment variable or a credential, not both")
    if credential:
        if "/" in credential or credential in (".", ".."):
            raise ConfigError(f"{what}: credential name {credential!r} must be a plain file name")
        directory = environ.get(CREDENTIALS_DIRECTORY)
        if not directory:
            raise ConfigError(
                f"{what}: credential {credential!r} is configured but ${CREDENTIALS_DIRECTORY} is not set "
                f"(run under systemd with LoadCredential={credential}:/path/to/file)"
            )
        path = Path(directory) / credential
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            raise ConfigError(f"{what}: credential file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{what}: cannot read credential file {path}: {exc}") from None
        if not value:
            raise ConfigError(f"{what}: credential file {path} is empty")
        return value
    if env:
        value = environ.get(env, "")
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set or empty")
        return value
    raise ConfigError(f"{what}: no secret configured (give *_env or *_credential)")
