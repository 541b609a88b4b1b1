"""Write tests/ledger/data/litellm_cost_cases.json: LiteLLM's own costs for a model sample.

LiteLLM is the standard ``ledger.pricing`` must meet, but it is far too big to be a test
dependency, so its answers are recorded once into a fixture that the tests replay. Run it
with litellm installed in a throwaway virtualenv (it does not import the ledger)::

    python3 -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install litellm==1.110.2
    /tmp/llvenv/bin/python tools/make_litellm_cost_cases.py

``LITELLM_LOCAL_MODEL_COST_MAP=True`` makes LiteLLM price from its bundled map, which must be
byte-identical to ledger/catalog/data/model_prices_and_context_window.json (checked below).
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


def _usages(entry: dict[str, Any]) -> list[dict[str, int]]:
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


def _litellm_usage(u: dict[str, int]) -> Usage:
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
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=prompt_details,
        completion_tokens_details=completion_details,
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
    )


def _selected(price_map: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Priced chat models, one per distinct (provider, set of price keys) signature: every
    pricing shape in the file is exercised without a fixture of thousands of lookalikes."""
    chosen: list[tuple[str, dict[str, Any]]] = []
    signatures: set[tuple[str, frozenset[str]]] = set()
    for name, entry in price_map.items():
        if (
            name == "sample_spec"
            or not isinstance(entry, dict)
            or entry.get("mode") != "chat"
            or "alias_of" in entry
            or not _number(entry.get("input_cost_per_token"))
            or not _number(entry.get("output_cost_per_token"))
            or not isinstance(entry.get("litellm_provider"), str)
            # Time-of-day prices: LiteLLM reads the wall clock; the ledger does not apply them.
            or "off_peak_pricing" in entry
        ):
            continue
        signature = (entry["litellm_provider"], frozenset(k for k in entry if "cost" in k))
        # Audio long-context tiers are rare and sometimes cheaper than the base audio rate:
        # keep every model that has one, not just one per signature.
        audio_tier = any(k.startswith("input_cost_per_audio_token_above_") for k in entry)
        if signature not in signatures or audio_tier:
            signatures.add(signature)
            chosen.append((name, entry))
    return chosen


def main() -> int:
    bundled = Path(litellm.__file__).parent / "model_prices_and_context_window_backup.json"
    if bundled.read_bytes() != SNAPSHOT.read_bytes():
        print("litellm's bundled price map differs from the packaged snapshot", file=sys.stderr)
        return 1
    price_map = json.loads(SNAPSHOT.read_bytes())
    cases: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name, entry in _selected(price_map):
        provider = entry["litellm_provider"]
        try:
            key = litellm.get_model_info(model=name, custom_llm_provider=provider).get("key")
        except Exception as exc:  # get_model_info raises a bare Exception for unmapped names
            skipped[name] = f"get_model_info failed: {exc}"[:200]
            continue
        if key != name:
            skipped[name] = f"litellm prices it from another entry: {key}"
            continue
        for full_usage in _usages(entry):
            usage = {k: v for k, v in full_usage.items() if v or k.endswith("n_tokens")}
            try:
                prompt_cost, completion_cost = litellm.cost_per_token(
                    model=name,
                    custom_llm_provider=provider,
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"],
                    cache_read_input_tokens=usage.get("cache_read_input_tokens", 0),
                    cache_creation_input_tokens=usage.get("cache_creation_input_tokens", 0),
                    usage_object=_litellm_usage(usage),
                )
            except Exception as exc:
                skipped[f"{name} {usage}"] = f"cost_per_token failed: {exc}"[:200]
                continue
            cases.append(
                {
                    "model": name,
                    "usage": usage,
                    "prompt_cost": repr(float(prompt_cost)),
                    "completion_cost": repr(float(completion_cost)),
                }
            )
    document = {
        "generator": "tools/make_litellm_cost_cases.py",
        "litellm_version": importlib.metadata.version("litellm"),
        "snapshot_sha256": hashlib.sha256(SNAPSHOT.read_bytes()).hexdigest(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_count": len({c["model"] for c in cases}),
        "case_count": len(cases),
        "skipped": skipped,
        "cases": cases,
    }
    # One case per line: small, and a regenerated fixture diffs line by line.
    head = json.dumps({k: v for k, v in document.items() if k != "cases"}, indent=1)[:-2]
    body = ",\n".join(json.dumps(case, separators=(",", ":")) for case in cases)
    OUT.write_text(f'{head},\n "cases": [\n{body}\n]}}\n')
    print(f"{document['case_count']} cases over {document['model_count']} models -> {OUT}")
    print(f"skipped {len(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
