"""A throwaway PostgreSQL for tests, with the Supabase stand-in and our migrations applied.

``PgCluster.start()`` runs ``initdb`` + ``pg_ctl`` in a temporary directory (as the ``postgres`` OS user
when we are root, since Postgres refuses to run as root), listening on 127.0.0.1 and on a Unix socket
in that directory, with trust auth and fsync off. With ``TEST_DATABASE_URL`` set it uses that server
instead and only creates (and later drops) a database with a random name. Either way the database gets
``tests/db/supabase_stand_in.sql``, then ``supabase/migrations/*.sql`` in order, then ``supabase/seed.sql``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from helpers import free_port

__all__ = ["ROOT", "PgCluster", "PgUnavailable", "find_bindir", "running_cluster", "sql_files"]

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = ROOT / "tests" / "db" / "supabase_stand_in.sql"
MIGRATIONS = ROOT / "supabase" / "migrations"
SEED = ROOT / "supabase" / "seed.sql"
PREFERRED_MAJOR = 15


class PgUnavailable(RuntimeError):
    """No PostgreSQL binaries were found, or the server could not be started."""


def find_bindir() -> Path:
    """Where initdb/pg_ctl/psql live: ``$PG_BINDIR``, Debian's PostgreSQL 15, another version, or PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    candidates.append(Path(f"/usr/lib/postgresql/{PREFERRED_MAJOR}/bin"))
    installed = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p).parent.name.isdigit()]
    candidates += sorted(installed, key=lambda p: int(p.parent.name), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file() and (candidate / "psql").is_file():
            return candidate
    raise PgUnavailable("PostgreSQL binaries not found (install postgresql-15 or set PG_BINDIR)")


def sql_files() -> list[Path]:
    """Everything a fresh test database gets, in order: stand-in, migrations, seed."""
    files = [STAND_IN, *sorted(MIGRATIONS.glob("*.sql"))]
    if SEED.is_file():
        files.append(SEED)
    return files


def _scratch_dir() -> str:
    """Where clusters live: ``$PGCLUSTER_TMPDIR``, else RAM (/dev/shm, if roomy) since disk writes dominate startup."""
    if os.environ.get("PGCLUSTER_TMPDIR"):
        return os.environ["PGCLUSTER_TMPDIR"]
    shm = "/dev/shm"
    with contextlib.suppress(OSError):
        stat = os.statvfs(shm)
        if os.access(shm, os.W_OK) and stat.f_bavail * stat.f_frsize >= 1 << 30:
            return shm
    return tempfile.gettempdir()


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@dataclass
class PgCluster:
    """A running test database; ``dsn`` is a ``postgresql://`` URL for the ``postgres`` superuser.

    ``socket_dir`` (own clusters only) also accepts connections: ``psql -h <socket_dir> -p <port> -U postgres``.
    """

    dsn: str
    bindir: Path
    host: str
    port: int
    user: str
    dbname: str
    datadir: Path | None = None
    socket_dir: Path | None = None
    _tmp: Path | None = None
    _admin_dsn: str | None = None
    _as_postgres: list[str] = field(default_factory=list)
    _stopped: bool = False

    @classmethod
    def start(cls, *, dbname: str = "ledger_test") -> PgCluster:
        """A fresh cluster (or a fresh database on ``$TEST_DATABASE_URL``) with the schema applied."""
        bindir = find_bindir()
        url = os.environ.get("TEST_DATABASE_URL")
        cluster = cls._on_server(bindir, url) if url else cls._fresh_cluster(bindir, dbname)
        try:
            for path in sql_files():
                cluster.apply(path)
        except BaseException:
            cluster.stop()
            raise
        atexit.register(cluster.stop)  # a safety net if the caller never gets to stop() (e.g. ^C)
        return cluster

    @classmethod
    def _fresh_cluster(cls, bindir: Path, dbname: str) -> PgCluster:
        as_postgres: list[str] = []
        tmp = Path(tempfile.mkdtemp(prefix="pgcluster-", dir=_scratch_dir()))
        if os.geteuid() == 0:
            # Postgres refuses to run as root: the cluster belongs to the postgres OS user.
            runuser = shutil.which("runuser")
            if runuser is None:
                shutil.rmtree(tmp, ignore_errors=True)
                raise PgUnavailable("running as root but `runuser` is missing")
            try:
                shutil.chown(tmp, user="postgres", group="postgres")
            except LookupError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise PgUnavailable("running as root but there is no `postgres` OS user") from exc
            as_postgres = [runuser, "-u", "postgres", "--"]
        datadir = tmp / "data"
        cluster = cls(
            dsn="",
            bindir=bindir,
            host="127.0.0.1",
            port=0,
            user="postgres",
            dbname=dbname,
            datadir=datadir,
            socket_dir=tmp,
            _tmp=tmp,
            _as_postgres=as_postgres,
        )
        try:
            cluster._init_datadir()
            cluster._start_server()
            cluster.dsn = f"postgresql://postgres@127.0.0.1:{cluster.port}/{dbname}"
            # file_copy: a plain copy of template1 (no WAL per block) is the fastest with fsync off.
            cluster._psql_admin(f'create database "{dbname}" strategy file_copy')
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _init_datadir(self) -> None:
        assert self.datadir is not None
        self._run_as_owner(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.datadir),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )

    def _start_server(self) -> None:
        last_error = ""
        for _ in range(5):  # the port is free when picked, but another process may take it first
            self.port = free_port()
            result = self._pg_ctl_start()
            if result.returncode == 0:
                return
            assert self._tmp is not None
            log = self._tmp / "server.log"
            last_error = result.stderr + (log.read_text(errors="replace") if log.is_file() else "")
        raise PgUnavailable(f"could not start PostgreSQL:\n{last_error}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        assert self.datadir is not None and self._tmp is not None
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self._tmp),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "120",
            "shared_buffers": "32MB",
            "timezone": "UTC",
        }
        options = " ".join(f"-c {k}={v}" for k, v in {**settings, "port": str(self.port)}.items())
        return self._run_as_owner(
            [
                str(self.bindir / "pg_ctl"),
                "--pgdata",
                str(self.datadir),
                "--log",
                str(self._tmp / "server.log"),
                "--options",
                options,
                "--wait",
                "--timeout=30",
                "start",
            ],
            check=False,
        )

    def stop_server(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``: sessions are cut) and keep its data: an outage."""
        if self.datadir is None:
            raise PgUnavailable("an outage needs a cluster of our own (not TEST_DATABASE_URL)")
        self._run_as_owner(
            [str(self.bindir / "pg_ctl"), "--pgdata", str(self.datadir), "--mode=fast", "--wait", "stop"]
        )

    def start_server(self) -> None:
        """Start a stopped server again, on the same port (the end of an outage)."""
        result = self._pg_ctl_start()
        if result.returncode != 0:
            raise PgUnavailable(f"could not restart PostgreSQL:\n{result.stderr}")

    @classmethod
    def _on_server(cls, bindir: Path, url: str) -> PgCluster:
        dbname = f"ledger_test_{uuid.uuid4().hex[:12]}"
        parts = urlsplit(url)
        cluster = cls(
            dsn=_with_database(url, dbname),
            bindir=bindir,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            dbname=dbname,
            _admin_dsn=url,
        )
        cluster._psql_admin(f'create database "{dbname}"')
        return cluster

    def _run_as_owner(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._as_postgres, *argv],
            cwd=self._tmp or None,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise PgUnavailable(f"{Path(argv[0]).name} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    def _admin(self) -> str:
        if self._admin_dsn:
            return self._admin_dsn
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _psql_admin(self, sql: str) -> str:
        return self._psql(self._admin(), ["--command", sql])

    def _psql(self, dsn: str, args: list[str], stdin: str | None = None) -> str:
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--no-align",
                "--tuples-only",
                "--set=ON_ERROR_STOP=1",
                "--dbname",
                dsn,
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, "psql", result.stdout, result.stderr)
        return result.stdout

    def psql(self, sql: str) -> str:
        """Run SQL (any number of statements) in the test database; its unaligned output, tuples only."""
        return self._psql(self.dsn, ["--file=-"], stdin=sql)

    def apply(self, path: Path) -> None:
        """Run one SQL file in a single transaction, as ``supabase`` applies a migration."""
        try:
            self._psql(self.dsn, ["--single-transaction", "--file", str(path)])
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"applying {path.relative_to(ROOT)} failed:\n{exc.stderr}") from exc

    def env(self) -> dict[str, str]:
        """Environment for libpq tools (psql, pg_prove): this server's psql first on PATH."""
        return {**os.environ, "PATH": f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def stop(self) -> None:
        """Stop the server and remove its directory (or drop the database on a shared server). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._admin_dsn:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._psql_admin(f'drop database if exists "{self.dbname}" with (force)')
            return
        try:
            if self.datadir is not None and (self.datadir / "postmaster.pid").exists():
                self._run_as_owner(
                    [str(self.bindir / "pg_ctl"), "--pgdata", str(self.datadir), "--mode=immediate", "--wait", "stop"],
                    check=False,
                )
        except (subprocess.SubprocessError, OSError):
            pass
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running_cluster(dbname: str = "ledger_test") -> Iterator[PgCluster]:
    """A started cluster for a fixture, stopped after; skips the tests without PostgreSQL (fails on CI)."""
    import pytest

    try:
        cluster = PgCluster.start(dbname=dbname)
    except PgUnavailable as exc:
        if os.environ.get("CI"):
            raise  # CI installs postgresql-15: a missing server there is a broken build, not a skip
        pytest.skip(f"no PostgreSQL to test against: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
