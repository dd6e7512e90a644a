"""A fake OpenRouter HTTP server on loopback, for tests, benchmarks and offline development.

Standard library only (``asyncio.start_server``): a minimal HTTP/1.1 server with keep-alive, so the
per-request server cost stays small and the socket is fully under control (resets, cuts, hangs).

It speaks OpenRouter's wire format (see ``/work/shared/reference/openrouter-api.md``):

* ``POST /api/v1/chat/completions`` - JSON or SSE (``stream: true``) completions that echo the last
  user message, with OpenRouter's ``usage`` (incl. ``cost``), ``provider`` and ``X-Generation-Id``.
* ``GET /api/v1/models`` (no auth) and ``GET /api/v1/key`` (auth).
* The same paths without the ``/api/v1`` prefix.
* Control endpoints (no auth, not recorded): ``POST /_fake/script``, ``GET /_fake/requests``,
  ``POST /_fake/reset``.

Behaviour of chat requests is scripted with a FIFO queue of steps (:meth:`FakeOpenRouter.script`; the
fault kinds are listed in :mod:`.script`).

Modules, one job each: ``wire`` (HTTP/1.1 framing), ``catalogue`` (``GET /models``), ``schema`` (a
minimal instance of a JSON schema), ``replies`` (completions, chunks, usage), ``script`` (the step
queue and its faults), ``chat`` (playing a step), ``server`` (lifecycle, connections, routing),
``cli`` (``main``).
"""

from __future__ import annotations

from .catalogue import DEFAULT_MODEL, MODELS
from .cli import main
from .replies import PROVIDER_NAME
from .schema import minimal_instance
from .script import FAULTS
from .server import FakeOpenRouter, ReceivedRequest

__all__ = [
    "DEFAULT_MODEL",
    "FAULTS",
    "MODELS",
    "PROVIDER_NAME",
    "FakeOpenRouter",
    "ReceivedRequest",
    "main",
    "minimal_instance",
]
