"""The example page in a real browser: Debian's Chromium, driven by Playwright for Python.

The process plumbing is the end-to-end tests' (``tests/e2e/e2e_procs.py``), reached by path so this
folder runs on its own too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # e2e_procs: the process helpers
