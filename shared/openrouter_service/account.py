"""What OpenRouter says of our key: ``GET /key`` proves it works and tells how much credit it has left.

``GET /models`` answers anyone, so it cannot tell a revoked key or exhausted credits from a working
setup; ``GET /key`` needs the key (401 when it is refused) and returns its limit, usage and what is
left (reference section 5: ``{"data": {"limit", "limit_remaining", "usage", "is_free_tier", ...}}``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["KEY_BODY_LIMIT", "KeyStatus", "key_status"]

# /key answers a few hundred bytes; anything much larger is not its answer.
KEY_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """One check of the key. ``ok``: OpenRouter accepted it. ``limit_remaining``: credits left under the
    key's limit in USD (``None``: no limit set, or not reported)."""

    ok: bool
    detail: str | None = None
    limit_remaining: float | None = None
    usage: float | None = None
    is_free_tier: bool | None = None

    def low_on_credits(self, threshold_usd: float) -> bool:
        """Whether the key's remaining limit is below ``threshold_usd`` (never for a key without one)."""
        return self.limit_remaining is not None and self.limit_remaining < threshold_usd


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def key_status(status_code: int, body: bytes) -> KeyStatus:
    """Read ``GET /key``'s answer: its status and (for a 200) the JSON body."""
    if status_code in (401, 403):
        return KeyStatus(False, f"OpenRouter refused the API key (HTTP {status_code})")
    if status_code != 200:
        return KeyStatus(False, f"HTTP {status_code}")
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        data = None
    if not isinstance(data, dict):
        return KeyStatus(True, "GET /key answered without its data object")
    free = data.get("is_free_tier")
    return KeyStatus(
        True,
        limit_remaining=_number(data.get("limit_remaining")),
        usage=_number(data.get("usage")),
        is_free_tier=free if isinstance(free, bool) else None,
    )
