"""Write tests/ledger/data/litellm_cost_cases.json: LiteLLM's own costs for every chat and
embedding model of the packaged price map.

LiteLLM is the standard ``ledger.pricing`` must meet, but it is far too big to be a test
dependency, so its answers are recorded once into a fixture that the tests replay. Run it
with litellm installed in a throwaway virtualenv (it does not import the ledger)::

    python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install litellm==1.110.2
    /tmp/litellm-venv/bin/python tools/make_litellm_cost_cases.py

``LITELLM_LOCAL_MODEL_COST_MAP=True`` makes LiteLLM price from its bundled map, which must be
byte-identical to ledger/catalog/data/model_prices_and_context_window.json (checked below).

What is covered, per model: usages on both sides of every long-context threshold, cache
reads and writes, reasoning and audio; every service tier the model has prices for
(``..._priority``, ``_flex``, ``_balanced``, ``_ultrafast``, and ``batch`` through LiteLLM's
batch call type); the data-residency, Vertex-location and inference-geo uplifts the model
lists; and, for models with ``off_peak_pricing``, moments inside, outside and on the edges
of the windows. LiteLLM reads the wall clock for off-peak prices, so every call is made
inside ``pinned_billing_time(moment)``: the fixture does not depend on when it was made.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

# The environment variable above must be set before litellm is imported.
import litellm  # type: ignore[import-not-found, unused-ignore]
from litellm._internal_context import (  # type: ignore[import-not-found, unused-ignore]
    pinned_billing_time,
)
from litellm.types.utils import (  # type: ignore[import-not-found, unused-ignore]
    CacheCreationTokenDetails,
    CompletionTokensDetailsWrapper,
    PromptTokensDetailsWrapper,
    Usage,
)

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "ledger/catalog/data/model_prices_and_context_window.json"
OUT = ROOT / "tests/ledger/data/litellm_cost_cases.json"
TIER_PREFIXES = (
    "input_cost_per_token_above_",
    "output_cost_per_token_above_",
    "cache_read_input_token_cost_above_",
    "cache_creation_input_token_cost_above_",
    "input_cost_per_audio_token_above_",
)
# Service tiers LiteLLM prices by key suffix (its ServiceTier enum; "fast" reads the
# "_priority" keys, "auto" the standard ones), and "batch", its batch call type.
KEY_TIERS = ("priority", "flex", "balanced", "ultrafast")
# A Wednesday at 08:00 UTC: peak time for every off-peak window in the file, on the UTC
# calendar and on Asia/Shanghai's. Every case without an off-peak question is priced then.
PEAK = "2026-03-04T08:00:00Z"
# Off-peak models: inside, outside and on both edges of the weekday windows
# (00:00-01:00, 04:00-06:00, 10:00-00:00 UTC), weekends (all day), a non-UTC offset, and the
# hours where the UTC and the Asia/Shanghai weekday differ.
OFF_PEAK_MOMENTS = (
    "2026-03-04T00:30:00Z",  # Wed, inside 00:00-01:00
    "2026-03-04T01:00:00Z",  # Wed, the end is exclusive: peak
    "2026-03-04T03:59:59Z",  # Wed, peak
    "2026-03-04T04:00:00Z",  # Wed, the start is inclusive: off-peak
    "2026-03-04T05:59:59.999999Z",  # Wed, still off-peak
    "2026-03-04T06:00:00Z",  # Wed, peak again
    "2026-03-04T09:59:59Z",  # Wed, peak
    "2026-03-04T10:00:00Z",  # Wed, off-peak until midnight
    "2026-03-04T23:59:59Z",  # Wed, off-peak (wraps to 00:00)
    "2026-03-04T14:30:00+08:00",  # 06:30 UTC, given in +08:00: peak
    "2026-03-04T12:30:00+08:00",  # 04:30 UTC: off-peak
    "2026-03-07T08:00:00Z",  # Saturday: off-peak all day
    "2026-03-08T02:00:00Z",  # Sunday: off-peak all day
    "2026-03-08T20:00:00Z",  # Sunday UTC, Monday 04:00 in Shanghai
    "2026-03-06T17:00:00Z",  # Friday UTC, Saturday 01:00 in Shanghai
    "2026-03-09T02:00:00Z",  # Monday, peak
)
RESIDENCY_KEYS = {
    "us": "regional_processing_uplift_multiplier_us",
    "eu": "regional_processing_uplift_multiplier_eu",
    "fedramp": "fedramp_uplift_multiplier",
}


# LiteLLM's batch path resolves the provider again, and for GitHub Copilot that means asking
# GitHub for a token: no batch-fallback sample from there.
NO_BATCH_FALLBACK = frozenset({"github_copilot"})


def _pricing(entry: object) -> dict[str, Any]:
    """What prices an entry: two names with the same pricing cost the same."""
    if not isinstance(entry, dict):
        return {}
    return {
        key: value
        for key, value in entry.items()
        if "cost" in key
        or "uplift" in key
        or key in ("litellm_provider", "tiered_pricing", "off_peak_pricing")
        or key == "provider_specific_entry"
    }


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _thresholds(entry: dict[str, Any]) -> list[int]:
    found: set[int] = set()
    for key, value in entry.items():
        if key.startswith(TIER_PREFIXES) and "_tokens" in key and value is not None:
            label = key.rsplit("_above_", 1)[1].split("_tokens")[0]
            try:
                found.add(int(float(label.replace("k", "")) * (1000 if "k" in label else 1)))
            except ValueError:
                continue
    for tier in entry.get("tiered_pricing") or []:
        bounds = tier.get("range") if isinstance(tier, dict) else None
        if isinstance(bounds, list) and len(bounds) == 2 and _number(bounds[1]):
            found.add(int(bounds[1]))
    return sorted(t for t in found if t < 5_000_000)


def _chat_usages(entry: dict[str, Any]) -> list[dict[str, int]]:
    usages = [
        {"prompt_tokens": 1000, "completion_tokens": 500},
        {
            "prompt_tokens": 5000,
            "completion_tokens": 200,
            "cache_read_input_tokens": 3000,
            "cache_creation_input_tokens": 1000,
        },
        {"prompt_tokens": 2000, "completion_tokens": 3000, "reasoning_tokens": 2500},
        {
            "prompt_tokens": 4000,
            "completion_tokens": 800,
            "audio_input_tokens": 1500,
            "audio_output_tokens": 300,
        },
        {"prompt_tokens": 1, "completion_tokens": 0},
    ]
    has_1h = entry.get("cache_creation_input_token_cost_above_1hr") is not None
    if has_1h:
        usages.append(
            {
                "prompt_tokens": 10000,
                "completion_tokens": 100,
                "cache_read_input_tokens": 2000,
                "cache_creation_input_tokens": 4000,
                "cache_creation_1h_input_tokens": 2500,
            }
        )
    if entry.get("input_cost_per_image") is not None:
        usages.append({"prompt_tokens": 1200, "completion_tokens": 50, "images": 3})
    if entry.get("input_cost_per_character") is not None:
        usages.append({"prompt_tokens": 300, "completion_tokens": 40, "characters": 1234})
    for threshold in _thresholds(entry):
        # At the threshold, one past it, and a big cached, reasoning, audio request above it.
        usages.append({"prompt_tokens": threshold, "completion_tokens": 700})
        usages.append({"prompt_tokens": threshold + 1, "completion_tokens": 700})
        usages.append(
            {
                "prompt_tokens": threshold + 50_000,
                "completion_tokens": 4000,
                "cache_read_input_tokens": threshold // 2,
                "cache_creation_input_tokens": 10_000,
                "reasoning_tokens": 1000,
                "audio_input_tokens": 2000,
                "audio_output_tokens": 100,
                "cache_creation_1h_input_tokens": 4000 if has_1h else 0,
            }
        )
    return usages


def _embedding_usages(entry: dict[str, Any]) -> list[dict[str, int]]:
    usages = [
        {"prompt_tokens": 1000, "completion_tokens": 0},
        {"prompt_tokens": 1, "completion_tokens": 0},
        {"prompt_tokens": 123_457, "completion_tokens": 0},
    ]
    if entry.get("input_cost_per_character") is not None:
        usages.append({"prompt_tokens": 300, "completion_tokens": 0, "characters": 1234})
    for threshold in _thresholds(entry):
        usages.append({"prompt_tokens": threshold, "completion_tokens": 0})
        usages.append({"prompt_tokens": threshold + 1, "completion_tokens": 0})
    return usages


def _litellm_usage(u: dict[str, int], inference_geo: str | None) -> Usage:
    prompt, completion = u["prompt_tokens"], u["completion_tokens"]
    cache_read = u.get("cache_read_input_tokens", 0)
    cache_write = u.get("cache_creation_input_tokens", 0)
    write_1h = u.get("cache_creation_1h_input_tokens", 0)
    audio_in, audio_out = u.get("audio_input_tokens", 0), u.get("audio_output_tokens", 0)
    reasoning = u.get("reasoning_tokens", 0)
    # text_tokens is always spelled out: LiteLLM derives it from prompt_tokens only when no
    # image_count is reported, and otherwise bills text input at zero.
    prompt_details = PromptTokensDetailsWrapper(
        text_tokens=prompt - cache_read - cache_write - audio_in,
        cached_tokens=cache_read or None,
        cache_write_tokens=cache_write or None,
        audio_tokens=audio_in or None,
        image_count=u.get("images") or None,
        character_count=u.get("characters") or None,
        cache_creation_token_details=(
            CacheCreationTokenDetails(
                ephemeral_5m_input_tokens=cache_write - write_1h,
                ephemeral_1h_input_tokens=write_1h,
            )
            if write_1h
            else None
        ),
    )
    completion_details = CompletionTokensDetailsWrapper(
        text_tokens=completion - reasoning - audio_out,
        reasoning_tokens=reasoning or None,
        audio_tokens=audio_out or None,
    )
    extra: dict[str, Any] = {} if inference_geo is None else {"inference_geo": inference_geo}
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=prompt_details,
        completion_tokens_details=completion_details,
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
        **extra,
    )


def _prices_tokens(entry: dict[str, Any]) -> bool:
    return any(
        _number(entry.get(key))
        for key in ("input_cost_per_token", "output_cost_per_token", "tiered_pricing")
    ) or bool(entry.get("tiered_pricing"))


def _has_suffix(entry: dict[str, Any], suffix: str) -> bool:
    return any(key.endswith(suffix) and _number(value) for key, value in entry.items())


def _contexts(entry: dict[str, Any], batch_without_prices: bool) -> list[dict[str, str]]:
    """The pricing conditions to ask LiteLLM about for one model: standard first."""
    contexts: list[dict[str, str]] = [{"at": PEAK}]
    if isinstance(entry.get("off_peak_pricing"), dict):
        contexts.extend({"at": moment} for moment in OFF_PEAK_MOMENTS)
    tiers = [tier for tier in KEY_TIERS if _has_suffix(entry, f"_{tier}")]
    if "priority" in tiers:
        tiers.append("fast")  # LiteLLM's alias: the priority prices
    if _has_suffix(entry, "_batches") or batch_without_prices:
        tiers.append("batch")
    contexts.extend({"at": PEAK, "service_tier": tier} for tier in tiers)
    residencies = [name for name, key in RESIDENCY_KEYS.items() if _number(entry.get(key))]
    for residency in residencies:
        contexts.append({"at": PEAK, "data_residency": residency})
        for tier in tiers[:1] + (["batch"] if "batch" in tiers[1:] else []):
            contexts.append({"at": PEAK, "data_residency": residency, "service_tier": tier})
    if _number(entry.get("regional_endpoint_uplift_multiplier")):
        contexts.append({"at": PEAK, "vertex_location": "us-east5"})
        contexts.append({"at": PEAK, "vertex_location": "global"})
    geo = entry.get("provider_specific_entry")
    if isinstance(geo, dict) and _number(geo.get("us")):
        contexts.append({"at": PEAK, "inference_geo": "us"})
        contexts.append({"at": PEAK, "inference_geo": "global"})
        if tiers:
            contexts.append({"at": PEAK, "inference_geo": "us", "service_tier": tiers[0]})
    return contexts


def _selected(price_map: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every chat and embedding model with a provider: no sampling."""
    return [
        (name, entry)
        for name, entry in price_map.items()
        if name != "sample_spec"
        and isinstance(entry, dict)
        and entry.get("mode") in ("chat", "embedding")
        and "alias_of" not in entry
        and isinstance(entry.get("litellm_provider"), str)
    ]


def _caller_provider(name: str, provider: str) -> str:
    """The provider LiteLLM is told about. A Vertex AI call carries "vertex_ai" whatever the
    publisher (``vertex_ai-anthropic_models``...), and only that path applies a
    Vertex location's uplift; entries it does not find under that name keep their own."""
    if not provider.startswith("vertex_ai-"):
        return provider
    try:
        key = litellm.get_model_info(model=name, custom_llm_provider="vertex_ai").get("key")
    except Exception:
        return provider
    return "vertex_ai" if key == name else provider


def _batch_path_finds(name: str, provider: str) -> bool:
    """LiteLLM's batch path resolves the provider again and prices 0 when it then cannot
    find the entry (``jamba-1.5`` is ``ai21`` in the file, ``bedrock`` for the batch path)."""
    try:
        resolved = litellm.get_llm_provider(model=name, custom_llm_provider=provider)[1]
        return bool(litellm.get_model_info(model=name, custom_llm_provider=resolved).get("key"))
    except Exception:
        return False


def _cost(
    name: str, provider: str, mode: str, usage: dict[str, int], context: dict[str, str]
) -> tuple[float, float]:
    tier = context.get("service_tier")
    batch = tier == "batch"
    call_type = "embedding" if mode == "embedding" else "completion"
    if batch:
        call_type = "retrieve_batch"
    moment = datetime.fromisoformat(context["at"].replace("Z", "+00:00"))
    with pinned_billing_time(moment):
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=name,
            custom_llm_provider=provider,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            cache_read_input_tokens=usage.get("cache_read_input_tokens", 0),
            cache_creation_input_tokens=usage.get("cache_creation_input_tokens", 0),
            usage_object=_litellm_usage(usage, context.get("inference_geo")),
            call_type=call_type,
            service_tier=None if batch else tier,
            data_residency=context.get("data_residency"),
            vertex_location=context.get("vertex_location"),
        )
    return float(prompt_cost), float(completion_cost)


def main() -> int:
    bundled = Path(litellm.__file__).parent / "model_prices_and_context_window_backup.json"
    if bundled.read_bytes() != SNAPSHOT.read_bytes():
        print("litellm's bundled price map differs from the packaged snapshot", file=sys.stderr)
        return 1
    price_map = json.loads(SNAPSHOT.read_bytes())
    contexts: list[dict[str, str]] = []
    context_index: dict[str, int] = {}
    models: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    # Batch prices for a model without any: LiteLLM halves the standard rates. One such
    # model per provider pins that rule without doubling the fixture.
    batch_fallback_providers: set[str] = set()
    for name, entry in _selected(price_map):
        provider, mode = entry["litellm_provider"], entry["mode"]
        try:
            key = litellm.get_model_info(model=name, custom_llm_provider=provider).get("key")
        except Exception as exc:  # get_model_info raises a bare Exception for unmapped names
            skipped[name] = f"get_model_info failed: {exc}"[:200]
            continue
        if key != name and _pricing(price_map.get(key)) != _pricing(entry):
            skipped[name] = f"litellm prices it from another entry, with other prices: {key}"
            continue
        provider = _caller_provider(name, provider)
        batch_ok = provider not in NO_BATCH_FALLBACK and _batch_path_finds(name, provider)
        if not batch_ok and _has_suffix(entry, "_batches"):
            skipped[f"{name} batch"] = "LiteLLM's batch path does not find the entry (prices 0)"
        fallback = (
            batch_ok
            and provider not in batch_fallback_providers
            and not _has_suffix(entry, "_batches")
        )
        if fallback:
            batch_fallback_providers.add(provider)
        usages = (_embedding_usages if mode == "embedding" else _chat_usages)(entry)
        usages = [{k: v for k, v in u.items() if v or k.endswith("n_tokens")} for u in usages]
        if not _prices_tokens(entry) and any("characters" in u for u in usages):
            # LiteLLM's cost_per_token prices nothing for a model without a token price
            # (medlm-*), not even its characters; the ledger bills the characters.
            usages = [u for u in usages if "characters" not in u]
            skipped[f"{name} characters"] = "LiteLLM prices no characters without token prices"
        cases: list[list[Any]] = []
        for context in _contexts(entry, batch_without_prices=fallback):
            if context.get("service_tier") == "batch" and not batch_ok:
                continue
            label = json.dumps(context, sort_keys=True)
            if label not in context_index:
                context_index[label] = len(contexts)
                contexts.append(context)
            for number, usage in enumerate(usages):
                try:
                    prompt_cost, completion_cost = _cost(name, provider, mode, usage, context)
                except Exception as exc:
                    skipped[f"{name} {usage} {context}"] = f"cost_per_token failed: {exc}"[:200]
                    continue
                cases.append(
                    [number, context_index[label], repr(prompt_cost), repr(completion_cost)]
                )
        record: dict[str, Any] = {"model": name}
        if key != name:
            record["litellm_entry"] = key  # same prices under another name
        models.append({**record, "usages": usages, "cases": cases})
    document = {
        "generator": "tools/make_litellm_cost_cases.py",
        "litellm_version": importlib.metadata.version("litellm"),
        "snapshot_sha256": hashlib.sha256(SNAPSHOT.read_bytes()).hexdigest(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_count": len(models),
        "case_count": sum(len(m["cases"]) for m in models),
        "format": "cases: [usage index, context index, LiteLLM prompt cost, completion cost]",
        "skipped": skipped,
        "contexts": contexts,
    }
    # One model per line: a regenerated fixture diffs model by model.
    head = json.dumps(document, indent=1)[:-2]
    body = ",\n".join(json.dumps(model, separators=(",", ":")) for model in models)
    OUT.write_text(f'{head},\n "models": [\n{body}\n]}}\n')
    print(f"{document['case_count']} cases over {document['model_count']} models -> {OUT}")
    print(f"skipped {len(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
