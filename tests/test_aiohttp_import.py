"""aiohttp is imported without reading a CA bundle for the SSL contexts it builds at import and we never use.

``aiohttp.connector`` makes two module-level contexts at import (``ssl.create_default_context()`` and one
calling ``set_default_verify_paths()``), each reading the system's CA bundle. Our transport gives
httpx-aiohttp its own context (``DeferredTrustContext``), so ours imports aiohttp through
``transport._import_aiohttp``, which skips that read on the importing thread: the two contexts trust no
CA (a connection made with them fails verification), the environment and ``ssl`` are left as they were,
other threads are unaffected, and our transport verifies TLS as before. Cold-start numbers:
bench/cold_start.py.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers import ROOT
from loopback_tls import certificates, https_server
from openrouter_service import transport

# Run in a fresh interpreter: in this one aiohttp may already be imported (its contexts made long ago).
PROBE = r"""
import asyncio, json, os, ssl, sys

url = sys.argv[1]
before = list(os.environ.items())
from openrouter_service.transport import default_transport

report = {"aiohttp_loaded_before": "aiohttp" in sys.modules}
trusting = default_transport()  # the first transport: aiohttp is imported here
report["environ_kept"] = list(os.environ.items()) == before
report["ssl_left_patched"] = "set_default_verify_paths" in vars(ssl.SSLContext)

import aiohttp
import aiohttp.connector
import httpx

report["aiohttp_contexts_ca"] = [
    aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    aiohttp.connector._SSL_CONTEXT_UNVERIFIED.cert_store_stats()["x509_ca"],
]
report["made_now_ca"] = ssl.create_default_context().cert_store_stats()["x509_ca"]


async def main():
    # the test's HTTPS server on loopback answers 200 to whoever trusts its CA
    # aiohttp's own default (ssl=True: its module-level verified context), the test CA named by the environment
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            report["aiohttp_default"] = response.status
    except aiohttp.ClientConnectorCertificateError:
        report["aiohttp_default"] = "refused"
    # a context made now from the same environment trusts it: the environment did name the CA
    async with aiohttp.ClientSession() as session, session.get(url, ssl=ssl.create_default_context()) as response:
        report["aiohttp_context_made_now"] = response.status
    # ours, built while the environment named the CA
    async with httpx.AsyncClient(transport=trusting) as client:
        report["ours_given_the_ca"] = (await client.get(url)).status_code
    # ours without it (certifi's bundle, which does not know the test CA)
    os.environ.pop("SSL_CERT_FILE", None)
    os.environ.pop("SSL_CERT_DIR", None)
    try:
        async with httpx.AsyncClient(transport=default_transport()) as client:
            report["ours_not_given_the_ca"] = (await client.get(url)).status_code
    except httpx.ConnectError:
        report["ours_not_given_the_ca"] = "refused"
    print(json.dumps(report))


asyncio.run(main())
"""


def _hashed_dir(ca: Path, folder: Path) -> Path:
    """A directory OpenSSL looks CAs up in (``<subject hash>.0``), holding ``ca``."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command (Debian package openssl) names a CA directory's files"
    subject_hash = subprocess.run(
        [openssl, "x509", "-subject_hash", "-noout", "-in", str(ca)], capture_output=True, text=True, check=True
    ).stdout.strip()
    folder.mkdir()
    shutil.copy(ca, folder / f"{subject_hash}.0")
    return folder


@pytest.mark.parametrize("named_by", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
async def test_aiohttp_imported_through_our_transport_trusts_no_ca_and_ours_verifies(
    tmp_path: Path, named_by: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "SSL_"))}
    env |= {"PYTHONPATH": str(ROOT / "shared"), "OPENROUTER_HTTP_TRANSPORT": "aiohttp"}
    # The server runs on this test's loop: the probe, a process of its own, is awaited, not waited for.
    async with https_server(tmp_path) as (url, ca):
        if named_by == "SSL_CERT_FILE":  # set by the user before: read by neither aiohttp context, and kept
            env["SSL_CERT_FILE"] = str(ca)
        else:  # looked up lazily at a handshake: a context holding a directory would trust it without counting it
            env["SSL_CERT_DIR"] = str(_hashed_dir(ca, tmp_path / "certs"))
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBE, url, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(probe.communicate(), 60)
    assert probe.returncode == 0, err.decode(errors="replace")[-3000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report.pop("aiohttp_loaded_before") is False
    assert report.pop("environ_kept") is True
    assert report.pop("ssl_left_patched") is False
    assert report.pop("aiohttp_contexts_ca") == [0, 0]
    made_now = report.pop("made_now_ca")
    if named_by == "SSL_CERT_FILE":
        assert made_now == 1  # the test CA: the environment is as the user set it
    assert report == {
        "aiohttp_default": "refused",
        "aiohttp_context_made_now": 200,
        "ours_given_the_ca": 200,
        "ours_not_given_the_ca": "refused",
    }


def test_only_the_importing_thread_skips_the_default_ca(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca, _, _ = certificates(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    def cas(context: ssl.SSLContext | None = None) -> int:
        if context is None:
            context = ssl.create_default_context()
        else:
            context.set_default_verify_paths()
        return context.cert_store_stats()["x509_ca"]

    elsewhere: list[int] = []
    with transport._no_default_ca_on_this_thread():
        here = cas(), cas(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        other = threading.Thread(target=lambda: elsewhere.append(cas()))
        other.start()
        other.join()
    assert (here, elsewhere) == ((0, 0), [1])
    assert "set_default_verify_paths" not in vars(ssl.SSLContext)  # inherited from _ssl._SSLContext again
    assert cas() == 1

    with pytest.raises(RuntimeError, match="boom"), transport._no_default_ca_on_this_thread():
        raise RuntimeError("boom")
    assert "set_default_verify_paths" not in vars(ssl.SSLContext)
    assert cas() == 1


def _imports_aiohttp(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
    else:
        return False
    return any(name.split(".")[0] in ("aiohttp", "httpx_aiohttp") for name in names)


def _calls_import_aiohttp(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Call)
        and isinstance(statement.value.func, ast.Name)
        and statement.value.func.id == "_import_aiohttp"
    )


def _own_nodes(node: ast.AST) -> list[ast.AST]:
    """``node`` and what it holds, except what nested functions hold (they are checked on their own)."""
    nested = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    found: list[ast.AST] = []
    stack = [] if isinstance(node, nested) else [node]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(child for child in ast.iter_child_nodes(current) if not isinstance(child, nested))
    return found


def test_every_aiohttp_import_in_our_code_goes_through_import_aiohttp() -> None:
    """Each ``import aiohttp`` / ``httpx_aiohttp`` in shared/ and functions/ is in a function that calls
    ``_import_aiohttp()`` before it (one at module level would be a cold-start import, and would skip it)."""
    imports, offenders = [], []
    for path in sorted([*(ROOT / "shared").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))]:
            called = False
            for statement in scope.body:
                called = called or _calls_import_aiohttp(statement)
                for node in _own_nodes(statement):
                    if _imports_aiohttp(node):
                        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                        imports.append(where)
                        if not called:
                            offenders.append(where)
    assert len(imports) >= 3, imports  # _invalid_http, _remap, _AiohttpTransport.__init__
    assert offenders == []
