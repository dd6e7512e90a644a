"""The HTTP transport under the pooled client, chosen by measurement (see bench/transport.py)."""

from __future__ import annotations

import httpx

__all__ = ["default_transport"]


def default_transport() -> httpx.AsyncBaseTransport | None:
    """The transport for a new pooled client; ``None`` means httpx's own."""
    return None
