"""Request policy: which models may be called, how many output tokens, what the prompt guard says.

The prompt guard (its compiled rules take about 70 ms to load) is imported on the first call that needs
it, so an instance that never scans (``health``, ``PROMPT_GUARD=off``) never loads it.

A pure step: it reads the caller's parameters and returns what to send, never changing the caller's
objects and never raising. When the request is outside the operator's policy the decision carries the
400 a caller should see (``refusal``); the pipeline records what the decision says, then raises it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from openrouter_service.messages import normalize_model

from .config import Settings
from .envelope import ApiError

__all__ = ["Decision", "apply_policy", "model_allowed"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says: the model that will be asked, the parameters to send, the prompt guard's
    hits, and the refusal when the request may not go ahead.

    ``guard_hits`` names every rule the caller's texts trip; ``guard_high`` those of them tripped with high
    confidence, the only ones ``PROMPT_GUARD=block`` refuses (the others are flagged only)."""

    model: str
    params: dict[str, Any]
    guard_hits: tuple[str, ...] = ()
    refusal: ApiError | None = None
    guard_high: tuple[str, ...] = ()

    def guard_action(self, rule: str) -> Literal["blocked", "flagged"]:
        """What the guard did about ``rule``'s hit: ``blocked`` when it is high confidence and the request
        was refused for it, else ``flagged`` (logged and counted only)."""
        refused = self.refusal is not None and self.refusal.type == "prompt_rejected"
        return "blocked" if refused and rule in self.guard_high else "flagged"


_scan_messages: Callable[[Iterable[Any], Mapping[str, Any] | None], list[Any]] | None = None


def _guard_scan() -> Callable[[Iterable[Any], Mapping[str, Any] | None], list[Any]]:
    """The guard's scan, imported on the first request the guard reads (not at every call)."""
    global _scan_messages
    if _scan_messages is None:
        from .guard import scan_messages

        _scan_messages = scan_messages
    return _scan_messages


def model_allowed(model: str, allowed: Sequence[str]) -> bool:
    """Whether ``model`` matches the allow-list (empty: everything; ``vendor/*``: a whole vendor)."""
    if not allowed:
        return True
    return any(model == entry or (entry.endswith("*") and model.startswith(entry[:-1])) for entry in allowed)


def apply_policy(
    settings: Settings, messages: Sequence[Any], params: Mapping[str, Any], default_model: str
) -> Decision:
    """The request as the operator allows it; refusals are ``model_not_allowed``, ``max_tokens_exceeded``
    and (``PROMPT_GUARD=block``, high-confidence hits only) ``prompt_rejected``, checked in that order."""
    requested = params.get("model")
    model = normalize_model(requested) if isinstance(requested, str) and requested.strip() else default_model
    names = [model]
    fallbacks = params.get("models")
    if isinstance(fallbacks, list):
        names += [normalize_model(m) if isinstance(m, str) else str(m) for m in fallbacks]
    for name in names:
        if not model_allowed(name, settings.allowed_models):
            refusal = ApiError(400, "model_not_allowed", f"The model {name!r} is not available here.")
            return Decision(model, dict(params), refusal=refusal)

    send = dict(params)
    cap = settings.max_output_tokens
    if cap is not None:
        for key in ("max_tokens", "max_completion_tokens"):
            value = params.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                return Decision(
                    model, send, refusal=ApiError(400, "max_tokens_exceeded", f"{key} may be at most {cap}.")
                )
        if params.get("max_tokens") is None and params.get("max_completion_tokens") is None:
            # Unset (or null, which upstream reads as unset) would mean the model's own, often much
            # larger, limit.
            send.pop("max_completion_tokens", None)
            send["max_tokens"] = cap

    if settings.prompt_guard == "off":
        return Decision(model, send)
    hits = _guard_scan()(messages, params)  # every caller-written text, whatever its role
    rules = tuple(hit.rule for hit in hits)
    high = tuple(hit.rule for hit in hits if hit.confidence == "high")
    if high and settings.prompt_guard == "block":
        refusal = ApiError(400, "prompt_rejected", "The request looks like a prompt-injection attempt.")
        return Decision(model, send, rules, refusal, high)
    return Decision(model, send, rules, guard_high=high)
