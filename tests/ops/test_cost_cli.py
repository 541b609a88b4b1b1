"""``ledger cost`` with the time, tier and region options (docs/pricing.md, rules 10-12):
the same rules as the projector, from the packaged snapshot (no database)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

pytestmark = pytest.mark.slow  # each test runs the CLI in a child process

DEEPSEEK = ("deepseek-flash", "--prompt", "10000", "--cache-read", "4000", "--completion", "1000")


async def _cost(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/none"  # unreachable: snapshot
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops", "cost", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("at", "hours", "total"),
    [
        ("2026-03-04T04:30:00Z", "off-peak", "0.001512"),
        ("2026-03-04T12:30:00+08:00", "off-peak", "0.001512"),
        ("2026-03-04T08:00:00", "standard", "0.003024"),  # naive: UTC
    ],
)
async def test_at_decides_off_peak_prices(at: str, hours: str, total: str) -> None:
    code, out, _ = await _cost(*DEEPSEEK, "--at", at)
    assert code == 0, out
    assert f"({hours} hours)" in out
    assert out.splitlines()[-1] == f"total {total} USD"


async def test_service_tier_and_region_options() -> None:
    code, out, _ = await _cost("gpt-5.4", "--prompt", "1000", "--completion", "100",
                               "--service-tier", "priority", "--data-residency", "eu")
    assert code == 0, out
    assert "service tier: priority" in out
    assert "[input_cost_per_token_priority]" in out
    assert "data_residency_eu_uplift  0.005 x 0.1 = 0.0005" in out
    assert out.splitlines()[-1] == "total 0.0088 USD"
    code, out, _ = await _cost("vertex_ai/claude-sonnet-4-6", "--prompt", "1000",
                               "--completion", "100", "--vertex-location", "us-east5")
    assert out.splitlines()[-1] == "total 0.00495 USD"
    code, out, _ = await _cost("claude-sonnet-4-6", "--prompt", "1000", "--completion", "100",
                               "--inference-geo", "us", "--service-tier", "batch")
    assert code == 0, out
    assert "note: inference_geo us: no uplift for batch requests" in out
    assert out.splitlines()[-1] == "total 0.00225 USD"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--service-tier", "prority", "--service-tier must be one of priority, flex, batch"),
        ("--data-residency", "asia", "--data-residency must be one of us, eu, fedramp"),
        ("--at", "yesterday", "--at must be an ISO 8601 timestamp"),
        ("--vertex-location", " ", "--vertex-location must not be empty"),
    ],
)
async def test_bad_option_is_one_line(option: str, value: str, message: str) -> None:
    code, out, err = await _cost("gpt-4o", "--prompt", "10", option, value)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {message}")
