"""``openrouter-functions``: the project's command line."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="openrouter-functions", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fake = sub.add_parser("fake-upstream", help="run a fake OpenRouter server on loopback for offline work")
    chosen = sys.argv[1:] if argv is None else argv
    if "fake-upstream" in chosen:  # the fake server's modules load only when it is the command (cold start)
        from .fake_upstream import cli as fake_upstream

        fake_upstream.add_arguments(fake)

    run = sub.add_parser("serve", help="serve /chat, /completion, /health and /metrics on one port")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    run.add_argument("--functions-dir", default=None, help="folder with <name>/main.py (default: ./functions)")
    run.add_argument(
        "--limit-concurrency",
        type=int,
        default=None,
        help="connections or requests at once; beyond it 503 overloaded (default 2048, above MAX_IN_FLIGHT's 1000)",
    )

    pack = sub.add_parser(
        "bundle", help="write a deployable folder for one function (main.py, runtime packages, pinned requirements)"
    )
    pack.add_argument("function", help="chat, completion or health")
    pack.add_argument("--out", required=True, help="folder to write: new, empty, or an earlier bundle (emptied first)")
    pack.add_argument("--functions-dir", default=None, help="folder with <name>/main.py (default: ./functions)")

    edge = sub.add_parser(
        "edge", help="serve the Supabase Edge front door (supabase/functions) under /functions/v1/<name> with Deno"
    )
    edge.add_argument("--host", default="127.0.0.1")
    edge.add_argument("--port", type=int, default=54321, help="port (default 54321, the Supabase CLI's API port)")
    edge.add_argument(
        "--functions-url",
        default=None,
        help="where /chat, /completion and /health answer (default: $OPENROUTER_FUNCTIONS_URL, else http://127.0.0.1:8080)",
    )

    token = sub.add_parser(
        "token",
        help="print an access token signed with $SUPABASE_JWT_SECRET, for local use without a Supabase project",
    )
    token.add_argument("--user", default=None, help="the token's user id (sub; default: the local developer's)")
    token.add_argument("--hours", type=float, default=24.0, help="lifetime in hours (default 24)")

    args = parser.parse_args(argv)
    if args.command in ("serve", "token", "edge"):
        from .dotenv_file import load_env_file

        if (loaded := load_env_file()) is not None:  # names only: the values may be secrets
            path, names = loaded
            print(
                f"loaded {len(names)} setting(s) from {path}: {', '.join(names) or '(all already set)'}",
                file=sys.stderr,
            )
    if args.command == "token":
        return _print_token(args.user, args.hours)
    if args.command == "edge":
        from .edge import run_edge

        return run_edge(args.port, args.host, args.functions_url)
    if args.command == "bundle":
        from pathlib import Path

        from .bundle import build_bundle
        from .serve import find_functions_dir

        folder = build_bundle(args.function, Path(args.out), find_functions_dir(args.functions_dir))
        print(f"bundled {args.function} into {folder}")
        return 0
    if args.command == "serve":
        import gc

        # No cyclic collections while the server's modules load (a tenth of its start-up, with nothing to
        # free): serve turns the collector back on, tuned, once the functions are loaded.
        gc.disable()
        try:
            from .serve import serve

            return serve(args.host, args.port, args.functions_dir, limit_concurrency=args.limit_concurrency)
        finally:
            gc.enable()
    if args.command == "fake-upstream":
        from .fake_upstream import cli as fake_upstream

        return fake_upstream.run(args)
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return 2


def _print_token(user: str | None, hours: float) -> int:
    """A Supabase-shaped HS256 user token, for calling a server that verifies with the same secret."""
    from .serve import DEV_USER_ID, mint_dev_token

    secret = os.environ.get("SUPABASE_JWT_SECRET", "").strip()
    if len(secret) < 32:
        print(
            "SUPABASE_JWT_SECRET must be set (32+ characters), the same value the server runs with; e.g.\n"
            "  export SUPABASE_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
            file=sys.stderr,
        )
        return 2
    if not 0 < hours <= 24 * 365:
        print("--hours must be between 0 and 8760", file=sys.stderr)
        return 2
    print(mint_dev_token(secret, user_id=user or DEV_USER_ID, hours=hours))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
