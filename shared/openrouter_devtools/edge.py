"""``openrouter-functions edge``: the Supabase Edge front door (``supabase/functions``) on a local port.

Runs ``supabase/functions/_dev/serve.ts`` under Deno — the binary the ``deno`` package from PyPI ships
(a dev dependency) — which mounts the three Edge Functions under ``/functions/v1/<name>``, as Supabase
serves them, and forwards each call to ``--functions-url`` (``OPENROUTER_FUNCTIONS_URL``), e.g. a local
``openrouter-functions serve``. No Supabase CLI or Docker is needed; tokens are not verified by the
front door locally (Supabase's gateway does that for ``verify_jwt = true`` functions), the Python
functions verify every one.

Deno runs with narrow permissions: network access to the listening address and the functions' host
only, and the two environment variables the front door reads.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_PORT",
    "DEV_SERVER",
    "ENV_VARS",
    "edge_argv",
    "edge_env",
    "find_deno",
    "find_edge_dir",
    "run_edge",
]

# Where the Supabase CLI's local stack answers (`[api] port` in supabase/config.toml), so a web app's
# local SUPABASE_URL=http://127.0.0.1:54321 reaches the front door's /functions/v1/<name>.
DEFAULT_PORT = 54321
DEFAULT_FUNCTIONS_URL = "http://127.0.0.1:8080"  # `openrouter-functions serve`'s default address
DEV_SERVER = Path("_dev") / "serve.ts"
# What supabase/functions/_shared/forward.ts reads.
ENV_VARS = ("OPENROUTER_FUNCTIONS_URL", "ALLOW_PLAIN_HTTP")


def find_deno() -> str:
    """The ``deno`` binary: the one the ``deno`` PyPI package installed, else one on ``PATH``."""
    try:
        package = importlib.import_module("deno")  # untyped: reached by name
        found = os.fsdecode(package.find_deno_bin())
    except (ImportError, AttributeError, FileNotFoundError):
        pass
    else:
        if os.path.isfile(found):
            return found
    on_path = shutil.which("deno")
    if on_path is None:
        raise FileNotFoundError("deno not found: install the dev extras (pip install -e '.[dev]', PyPI package deno)")
    return on_path


def find_edge_dir(explicit: str | None = None) -> Path:
    """``supabase/functions``: the one given, else under the working directory, else beside the package."""
    candidates = (
        [Path(explicit)]
        if explicit
        else [Path.cwd() / "supabase" / "functions", Path(__file__).resolve().parents[2] / "supabase" / "functions"]
    )
    for candidate in candidates:
        if (candidate / DEV_SERVER).is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no {DEV_SERVER} in {', '.join(map(str, candidates))}")


def _net_address(url: str) -> str | None:
    """``host:port`` of an http(s) URL for ``--allow-net``; ``None`` if it names no usable host."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def edge_argv(
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    functions_url: str | None = DEFAULT_FUNCTIONS_URL,
    *,
    deno: str | None = None,
    edge_dir: Path | None = None,
) -> list[str]:
    """The ``deno run`` command line serving the front door on ``host:port``, forwarding to ``functions_url``."""
    folder = edge_dir or find_edge_dir()
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    allowed = [listen]
    upstream = _net_address(functions_url) if functions_url else None
    if upstream is not None and upstream not in allowed:
        allowed.append(upstream)
    return [
        deno or find_deno(),
        "run",
        "--no-prompt",
        f"--allow-net={','.join(allowed)}",
        f"--allow-env={','.join(ENV_VARS)}",
        str(folder / DEV_SERVER),
        "--host",
        host,
        "--port",
        str(port),
    ]


def edge_env(functions_url: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (the process's environment) with ``OPENROUTER_FUNCTIONS_URL`` set, or removed when ``None``/blank."""
    env = dict(os.environ if base is None else base)
    env.pop("OPENROUTER_FUNCTIONS_URL", None)
    if functions_url and functions_url.strip():
        env["OPENROUTER_FUNCTIONS_URL"] = functions_url.strip()
    env.setdefault("DENO_NO_UPDATE_CHECK", "1")  # no network call to look for a newer Deno
    return env


def run_edge(port: int = DEFAULT_PORT, host: str = "127.0.0.1", functions_url: str | None = None) -> int:
    """Serve the front door until interrupted: Deno replaces this process (returns only on a set-up error)."""
    url = functions_url if functions_url is not None else os.environ.get("OPENROUTER_FUNCTIONS_URL")
    url = DEFAULT_FUNCTIONS_URL if url is None else url
    try:
        argv = edge_argv(port, host, url)
    except FileNotFoundError as exc:
        print(f"openrouter-functions edge: {exc}", file=sys.stderr)
        return 2
    env = edge_env(url)
    sys.stdout.flush()
    # Deno replaces this process, so signals (Ctrl+C, SIGTERM) reach it directly; argv is built above.
    os.execve(argv[0], argv, env)  # noqa: S606
    return 0  # pragma: no cover - execve does not return
