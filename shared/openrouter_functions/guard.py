"""Prompt guard: documented heuristics for common prompt-injection attempts.

What it catches: the well-worn phrasings ("ignore all previous instructions", "you are now DAN",
"reveal your system prompt"), fake role markers pasted into user text (``<|im_start|>system``,
``[INST]``, ``### System:``) and requests to switch off safety rules.

What it cannot catch: anything phrased differently, translated, encoded (base64, leetspeak,
homoglyphs), split across messages, or hidden in images, files or tool results; and injections that
arrive through content the model fetches itself. It is a tripwire that makes attempts visible in logs
and metrics, not a security boundary — never rely on it to keep secrets in a system prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["RULES", "scan_messages", "scan_text"]

RULES: dict[str, re.Pattern[str]] = {
    "ignore_instructions": re.compile(
        r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|your|system)\b"
        r"[^.\n]{0,20}\b(instructions?|prompts?|rules|directions|guidelines)\b",
        re.IGNORECASE,
    ),
    "reveal_system_prompt": re.compile(
        r"\b(reveal|print|show|repeat|output|leak|tell me)\b[^.\n]{0,40}\b(system prompt|hidden prompt|"
        r"initial instructions|your instructions|developer message)\b",
        re.IGNORECASE,
    ),
    "persona_override": re.compile(
        r"\b(you are now|from now on you are|act as|pretend (to be|you are))\b[^.\n]{0,40}"
        r"\b(DAN|jailbr(eak|oken)|unrestricted|unfiltered|developer mode|no (restrictions|rules|limits))\b",
        re.IGNORECASE,
    ),
    "disable_safety": re.compile(
        r"\b(without|no|bypass|disable|turn off)\b[^.\n]{0,20}\b(safety|content|ethical)\b[^.\n]{0,15}"
        r"\b(filters?|guidelines|restrictions|policies)\b",
        re.IGNORECASE,
    ),
    "role_marker": re.compile(
        r"(<\|im_start\|>\s*(system|assistant)|\[/?INST\]|<<SYS>>|^\s*#{2,}\s*(system|assistant)\s*:)",
        re.IGNORECASE | re.MULTILINE,
    ),
}


def scan_text(text: str) -> list[str]:
    """Names of the rules ``text`` trips, in rule order."""
    return [name for name, pattern in RULES.items() if pattern.search(text)]


def _texts(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]


def scan_messages(messages: Iterable[Mapping[str, Any]]) -> list[str]:
    """Rules tripped by the caller-written (user) messages; system prompts are the app's own."""
    hits: list[str] = []
    for message in messages:
        if message.get("role") != "user":
            continue
        for text in _texts(message.get("content")):
            for name in scan_text(text):
                if name not in hits:
                    hits.append(name)
    return hits
