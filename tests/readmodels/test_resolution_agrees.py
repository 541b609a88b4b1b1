"""The model-name contract: every form of a name, against every caller of the one rule.

Callers: the price-map side (``resolve_model_name``, what ``ledger cost`` uses without a
database), the CLI lookup (``readmodels.catalog_lookup``: ``models show``, ``cost``),
the read models' hot path (``get_by_name``) and the projector's pricer (``CatalogPricer``,
which shows the model it found through the cost: every model here has its own price).
The catalog is written the real way: the importer plans events from a price map and the
catalog projection applies them, plus one alias an operator set (a ``model_aliases`` row
that is in no price map). Search: the CLI and the read models rank the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger.catalog import aliases_from_price_map, resolve_model_name
from ledger.catalog.naming import fold
from ledger.events import ModelAliasSet
from ops.catalog_import import CatalogState, plan_import
from projections.catalog import CatalogProjection
from projections.pricer import CatalogPricer
from readmodels import ReadModels
from readmodels.catalog_lookup import resolve, search
from tests.projections.helpers import usage_event

JAN = datetime(2026, 1, 1, tzinfo=UTC)
PROMPT = 1000


def _model(provider: str, input_price: str) -> dict[str, Any]:
    return {"litellm_provider": provider, "mode": "chat",
            "input_cost_per_token": Decimal(input_price), "output_cost_per_token": Decimal(0)}


PRICE_MAP: dict[str, dict[str, Any]] = {
    "gpt-4o": _model("openai", "0.000001"),
    "openrouter/gpt-4o": _model("openrouter", "0.000002"),  # a name that contains a slash
    "azure_ai/gpt-6-astra": _model("azure_ai", "0.000003"),
    "azure_ai/gpt-astra-latest": {"alias_of": "azure_ai/gpt-6-astra"},
    "Mistral-Large": _model("mistral", "0.000004"),  # two names that differ only in case
    "mistral-large": _model("mistral", "0.000005"),
    "dangling-latest": {"alias_of": "gone"},  # an alias_of entry whose target is missing
}
OPERATOR_ALIASES = {"my-4o": "gpt-4o"}  # set by hand (ModelAliasSet), in no price map

# name as asked -> (model, which rule), or None
FORMS: dict[str, tuple[str, str] | None] = {
    "gpt-4o": ("gpt-4o", "name"),
    "openrouter/gpt-4o": ("openrouter/gpt-4o", "name"),
    "azure_ai/gpt-astra-latest": ("azure_ai/gpt-6-astra", "alias"),
    "my-4o": ("gpt-4o", "alias"),
    "openai/gpt-4o": ("gpt-4o", "provider prefix"),
    "openai/my-4o": ("gpt-4o", "provider prefix and alias"),
    "openrouter/openrouter/gpt-4o": ("openrouter/gpt-4o", "provider prefix"),
    "GPT-4o": ("gpt-4o", "name (ignoring case)"),
    "Azure_AI/GPT-Astra-Latest": ("azure_ai/gpt-6-astra", "alias (ignoring case)"),
    "MY-4O": ("gpt-4o", "alias (ignoring case)"),
    "OpenAI/GPT-4O": ("gpt-4o", "provider prefix (ignoring case)"),
    "OPENAI/My-4o": ("gpt-4o", "provider prefix and alias (ignoring case)"),
    "mistral-large": ("mistral-large", "name"),
    "MISTRAL-LARGE": ("Mistral-Large", "name (ignoring case)"),  # first in code-point order
    "dangling-latest": ("dangling-latest", "name (dangling alias)"),
    "anthropic/gpt-4o": None,  # another provider
    "openai/openrouter/gpt-4o": None,
    "openai/": None,
    "gpt-4o ": None,  # only case is ignored, nothing else
    "no-such-model": None,
}


async def _write_catalog(conn: asyncpg.Connection) -> None:
    plan = plan_import(PRICE_MAP, CatalogState({}, {}, frozenset()), valid_from=JAN)
    assert not plan.rejected
    projection = CatalogProjection()
    operator = [ModelAliasSet(event_id=uuid.uuid4(), occurred_at=JAN, source="operator",
                              alias=alias, model=model)
                for alias, model in OPERATOR_ALIASES.items()]
    for event in [*plan.events, *operator]:
        await projection.apply_one(conn, event)


Answers = dict[str, str | None]


async def _by_importer(conn: asyncpg.Connection, dsn: str) -> Answers:
    aliases = {**aliases_from_price_map(PRICE_MAP), **OPERATOR_ALIASES}
    return {name: resolve_model_name(name, PRICE_MAP, aliases) for name in FORMS}


async def _by_cli_lookup(conn: asyncpg.Connection, dsn: str) -> Answers:
    answers: Answers = {}
    for name in FORMS:
        found = await resolve(conn, name)
        answers[name] = None if found is None else found.name
        expected = FORMS[name]
        if found is not None and expected is not None:
            assert found.how == expected[1], name  # the CLI also says which rule matched
    return answers


async def _by_read_models(conn: asyncpg.Connection, dsn: str) -> Answers:
    async with ReadModels.open(dsn) as rm:
        answers: Answers = {}
        for name in FORMS:
            model = await rm.models.get_by_name(name)
            answers[name] = None if model is None else model.name
        return answers


async def _by_pricer(conn: asyncpg.Connection, dsn: str) -> Answers:
    """The model each name was priced as, read back from its cost (prices are distinct)."""
    by_cost = {PROMPT * Decimal(str(e["input_cost_per_token"])): name
               for name, e in PRICE_MAP.items() if "input_cost_per_token" in e}
    key = uuid.uuid4()
    events = [usage_event(key, model=name, when=datetime(2026, 3, 1, tzinfo=UTC), cost=None,
                          prompt=PROMPT, completion=0) for name in FORMS]
    costs = await CatalogPricer().costs(conn, events)
    answers: Answers = {}
    for name, cost in zip(FORMS, costs, strict=True):
        assert not isinstance(cost, Exception), (name, cost)
        amount, source = cost
        answers[name] = None if amount is None else by_cost[amount]
        assert source == ("unpriced" if amount is None else "catalog"), name
    return answers


Caller = Callable[[asyncpg.Connection, str], Awaitable[Answers]]
CALLERS: dict[str, Caller] = {
    "importer (price map)": _by_importer,
    "CLI lookup": _by_cli_lookup,
    "read models": _by_read_models,
    "pricer": _by_pricer,
}


@pytest.mark.parametrize("caller", list(CALLERS))
async def test_every_form_of_a_name_resolves_the_same_for_every_caller(
    pg_dsn: str, caller: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _write_catalog(conn)
        answers = await CALLERS[caller](conn, pg_dsn)
    finally:
        await conn.close()
    expected = {name: None if form is None else form[0] for name, form in FORMS.items()}
    if caller == "pricer":  # a dangling alias entry has no prices: it is priced as nothing
        expected["dangling-latest"] = None
    wrong = {name: (answers[name], expected[name]) for name in FORMS
             if answers[name] != expected[name]}
    assert not wrong, f"{caller}: asked -> (answer, expected): {wrong}"


SEARCHES = ("gpt4o", "gpt-4o", "astra", "GPT", "mistral", "4o", "zzz")


async def test_cli_and_read_models_search_rank_the_same(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _write_catalog(conn)
        by_cli = {q: [(m.name, m.score) for m in await search(conn, q, 10)] for q in SEARCHES}
    finally:
        await conn.close()
    async with ReadModels.open(pg_dsn) as rm:
        by_read_models = {q: [(m.model.name, m.score) for m in await rm.models.search(q, 10)]
                          for q in SEARCHES}
    assert by_cli == by_read_models
    assert [name for name, _ in by_cli["gpt4o"]][:2] == ["gpt-4o", "openrouter/gpt-4o"]


async def test_python_and_postgresql_ignore_the_same_case(pg_dsn: str) -> None:
    """naming.fold and the indexes' lower(... COLLATE "C"): ASCII only, in any locale."""
    names = ["GPT-4o", "École", "STRASSE", "Straße", "İSTANBUL", "ΣΊΣΥΦΟΣ", "ＧＰＴ", "a/B_c.D"]
    conn = await asyncpg.connect(pg_dsn)
    try:
        folded = await conn.fetch(
            "SELECT n, lower(n COLLATE \"C\") AS f FROM unnest($1::text[]) n", names)
    finally:
        await conn.close()
    assert {r["n"]: r["f"] for r in folded} == {n: fold(n) for n in names}
    assert fold("École") == "École" and fold("GPT-4o") == "gpt-4o"
