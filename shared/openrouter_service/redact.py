"""Removing secrets from anything that is about to be logged."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["PREVIEW_CHARS", "mask_secrets", "mask_value", "preview"]

PREVIEW_CHARS = 512

_SECRET_PATTERNS = re.compile(
    r"""
      sk-or-v1-[A-Za-z0-9]+                          # OpenRouter API keys
    | sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}          # other provider keys of the same family
    | sb_(?:secret|publishable)_[A-Za-z0-9_\-]{8,}    # Supabase's new API keys
    | eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*   # JWTs (Supabase access/service tokens)
    | (?<=[Bb]earer\s)[^\s"',;]+                      # whatever follows "Bearer "
    """,
    re.VERBOSE,
)


def mask_secrets(text: str, *extra: str) -> str:
    """``text`` with API keys, bearer tokens, JWTs and every string in ``extra`` replaced by ``***``."""
    for secret in extra:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "***")
    return _SECRET_PATTERNS.sub("***", text)


# Values returned as they are (exact types: a subclass takes the long way, with the same result).
_PLAIN_TYPES = frozenset({type(None), bool, int, float})


def mask_value(value: Any, *extra: str) -> Any:
    """A JSON-like ``value`` with every string in it (keys aside) masked by :func:`mask_secrets`."""
    if isinstance(value, str):
        return mask_secrets(value, *extra)
    if isinstance(value, Mapping):
        if extra:
            return {str(k): mask_value(v, *extra) for k, v in value.items()}
        # A log line's fields, once per request: plain values and strings without the recursive call, and
        # the strings searched once, joined: a secret in one of them is a match in the joined text (no
        # pattern is anchored, and NUL, which joins them, is neither a key's, a token's nor a space), so
        # when the joined text has none (nearly always) no string needs its own substitution.
        masked: dict[str, Any] = {}
        strings: list[str] = []
        for k, v in value.items():
            kind = type(v)
            if kind is str:
                masked[str(k)] = v
                strings.append(v)
            elif kind in _PLAIN_TYPES:
                masked[str(k)] = v
            else:
                masked[str(k)] = mask_value(v)
        if strings and _SECRET_PATTERNS.search("\x00".join(strings)) is not None:
            for k, v in value.items():
                if type(v) is str:
                    masked[str(k)] = _SECRET_PATTERNS.sub("***", v)
        return masked
    if isinstance(value, list | tuple):
        return [mask_value(v, *extra) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_secrets(str(value), *extra)


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """A masked preview of ``text``, cut to ``limit`` characters (an ellipsis marks the cut)."""
    masked = mask_secrets(text)
    if len(masked) <= limit:
        return masked
    return masked[: limit - 1] + "…"
