"""Child processes for tests that run real servers: output kept in files, bounded readiness, sure cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from helpers import HOST, ROOT

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class Process:
    """A child process whose stdout/stderr go to temporary files (no pipe can fill up and block it)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        port: int | None = None,
        *,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self._final: tuple[str, str] | None = None  # the output, kept once the files are closed
        self.popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,
        )

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @staticmethod
    def _read(handle: IO[bytes]) -> str:
        handle.seek(0)
        return handle.read().decode("utf-8", "replace")

    def stdout(self) -> str:
        return self._final[0] if self._final else self._read(self._out)

    def stderr(self) -> str:
        return self._final[1] if self._final else self._read(self._err)

    def describe(self) -> str:
        return (
            f"{self.name} ({' '.join(self.argv)}) returncode={self.popen.poll()}\n"
            f"--- stdout ---\n{self.stdout()[-4000:]}\n--- stderr ---\n{self.stderr()[-4000:]}"
        )

    def wait_ready(self, path: str, *, timeout: float = READY_TIMEOUT, accept: Sequence[int] = (200,)) -> None:
        """Poll ``GET path`` until it answers one of ``accept``; fail (with the logs) after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: object = None
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"process exited before it was ready:\n{self.describe()}")
                try:
                    response = http.get(self.base_url + path)
                except httpx.TransportError as exc:
                    last = exc
                else:
                    if response.status_code in accept:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                time.sleep(0.05)
        self.terminate()
        raise TimeoutError(f"not ready after {timeout}s (last: {last!r}):\n{self.describe()}")

    def wait_for_output(self, needle: str, *, timeout: float = READY_TIMEOUT) -> str:
        """Poll stdout until it contains ``needle``; return all of stdout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout()
            if needle in text:
                return text
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"{needle!r} not printed within {timeout}s:\n{self.describe()}")

    def terminate(self) -> None:
        """SIGTERM this process's own group (it was started in a new session), without waiting."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it is still there after a bounded wait."""
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=STOP_TIMEOUT)
        if self._final is None:
            self._final = (self.stdout(), self.stderr())
            self._out.close()
            self._err.close()


def stop_all(processes: Sequence[Process]) -> None:
    """Signal every process first, then wait for each (shutdowns overlap)."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop()
