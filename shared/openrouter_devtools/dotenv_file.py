"""Local runs read ``.env``: the variables of the README's configuration table, one ``NAME=value`` a line.

``openrouter-functions serve``, ``token`` and ``edge`` load ``./.env`` (or the file ``ENV_FILE`` names)
into their environment before reading any setting. A variable already set in the environment wins, so a
one-off ``OPENROUTER_MODEL=... bash scripts/serve.sh`` still overrides the file. Deployed functions never
read a file: their platform sets their environment (docs/deploy.md).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["load_env_file"]


def load_env_file(env: MutableMapping[str, str] | None = None) -> tuple[Path, list[str]] | None:
    """Load ``ENV_FILE`` (default ``.env`` in the working directory) into ``env`` (default ``os.environ``)
    without overriding what is set; returns the file and the names it set, or None without a file."""
    target = os.environ if env is None else env
    path = Path(target.get("ENV_FILE") or ".env")
    if not path.is_file():
        if target.get("ENV_FILE"):
            raise SystemExit(f"ENV_FILE={path} does not exist")
        return None
    from dotenv import dotenv_values  # only when there is a file to read

    loaded = []
    for name, value in dotenv_values(path, interpolate=False).items():  # a value is used as written
        if value is not None and name not in target:
            target[name] = value
            loaded.append(name)
    return path, loaded
