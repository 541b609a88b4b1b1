"""Models: exact, alias and provider-prefixed resolution, invalidation, search, providers."""

from __future__ import annotations

from readmodels import ReadModels
from tests.polling import wait_until
from tests.readmodels.conftest import Writer


async def test_resolution(rm: ReadModels, writer: Writer) -> None:
    await writer.add_model("gpt-4o", "openai")
    await writer.add_model("openrouter/gpt-4o", "openrouter")  # a name that contains a slash
    await writer.set_alias("4o", "gpt-4o")
    await writer.settled(rm)
    exact = await rm.models.get_by_name("gpt-4o")
    assert exact is not None and exact.provider == "openai"
    assert "vision" in exact.capabilities and "input_cost_per_token" in exact.prices
    for lookup in ("4o", "openai/gpt-4o", "openai/4o"):
        model = await rm.models.get_by_name(lookup)
        assert model is not None and model.name == "gpt-4o", lookup
    routed = await rm.models.get_by_name("openrouter/gpt-4o")
    assert routed is not None and routed.name == "openrouter/gpt-4o"  # exact name wins
    assert await rm.models.get_by_name("anthropic/gpt-4o") is None  # wrong provider
    assert await rm.models.get_by_name("nope") is None
    queries = rm.models.queries
    for lookup in ("gpt-4o", "4o", "openai/gpt-4o", "nope"):
        await rm.models.get_by_name(lookup)
    assert rm.models.queries == queries  # all cached, the negative answer too


async def test_invalidation_by_model_and_alias(rm: ReadModels, writer: Writer) -> None:
    await writer.add_model("gpt-4o", "openai", input_cost="0.000001")
    await writer.add_model("gpt-4.1", "openai")
    await writer.set_alias("default", "gpt-4o")
    await writer.settled(rm)
    for lookup in ("gpt-4o", "default", "openai/gpt-4o", "openai/default", "openai/new"):
        await rm.models.get_by_name(lookup)
    # A price change names only the model: its aliases and prefixed names must follow.
    await writer.add_model("gpt-4o", "openai", input_cost="0.000002")

    async def repriced() -> bool:
        results = [await rm.models.get_by_name(n)
                   for n in ("gpt-4o", "default", "openai/gpt-4o", "openai/default")]
        return all(m is not None and str(m.input_cost_per_token) == "0.000002"
                   for m in results)

    await wait_until(repriced, 1.0, "repriced", interval=0.005)
    await writer.set_alias("default", "gpt-4.1")  # alias re-pointed: notification names it

    async def repointed() -> bool:
        a = await rm.models.get_by_name("default")
        b = await rm.models.get_by_name("openai/default")
        return a is not None and b is not None and a.name == b.name == "gpt-4.1"

    await wait_until(repointed, 1.0, "repointed", interval=0.005)
    await writer.add_model("new", "openai")  # the negative "openai/new" must go

    async def created() -> bool:
        return await rm.models.get_by_name("openai/new") is not None

    await wait_until(created, 1.0, "created", interval=0.005)


async def test_names_that_differ_in_case_resolve_and_are_invalidated(
    rm: ReadModels, writer: Writer
) -> None:
    # Cached while nothing matches: a model spelled differently must still evict them.
    for lookup in ("GPT-4O", "OpenAI/GPT-4o", "Default"):
        assert await rm.models.get_by_name(lookup) is None
    await writer.add_model("gpt-4o", "openai")
    await writer.set_alias("default", "gpt-4o")

    async def found() -> bool:
        models = [await rm.models.get_by_name(n) for n in ("GPT-4O", "OpenAI/GPT-4o", "Default")]
        return all(m is not None and m.name == "gpt-4o" for m in models)

    await wait_until(found, 1.0, "found", interval=0.005)
    await writer.add_model("GPT-4O", "openai")  # an exact spelling wins over a case-blind one

    async def exact() -> bool:
        model = await rm.models.get_by_name("GPT-4O")
        return model is not None and model.name == "GPT-4O"

    await wait_until(exact, 1.0, "exact", interval=0.005)


async def test_search_by_provider_and_providers(rm: ReadModels, writer: Writer) -> None:
    await writer.add_provider("openai", region="us")
    await writer.add_provider("anthropic")
    for name, owner in (("gpt-4o", "openai"), ("gpt-4o-mini", "openai"),
                           ("gpt-3.5-turbo", "openai"), ("claude-3-5-sonnet", "anthropic")):
        await writer.add_model(name, owner, notify=False)
    matches = await rm.models.search("gpt-4o", limit=5)
    assert [m.model.name for m in matches][:2] == ["gpt-4o", "gpt-4o-mini"]
    assert matches[0].score >= matches[-1].score
    assert [m.model.name for m in await rm.models.search("sonnet")] == ["claude-3-5-sonnet"]
    assert await rm.models.search("   ") == ()
    assert [m.name for m in await rm.models.by_provider("openai")] == [
        "gpt-3.5-turbo", "gpt-4o", "gpt-4o-mini"]
    provider = await rm.models.provider("openai")
    assert provider is not None and provider.config == {"region": "us"}
    assert await rm.models.provider("nope") is None
    assert [p.name for p in await rm.models.providers()] == ["anthropic", "openai"]


async def test_alias_entry_resolves_to_its_target_not_its_own_row(pg_dsn: str) -> None:
    """The price map lists alias_of entries as rows; a lookup must land on the target."""
    import asyncpg

    from readmodels import ReadModels

    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO models (name, provider, mode, input_cost_per_token, raw, valid_from) "
            "VALUES ('azure_ai/gpt-6-astra', 'azure_ai', 'chat', 0.000001, '{}', now()), "
            "('azure_ai/gpt-astra-latest', NULL, NULL, NULL, "
            "'{\"alias_of\": \"azure_ai/gpt-6-astra\"}', now())")
        await conn.execute("INSERT INTO model_aliases (alias, model) "
                           "VALUES ('azure_ai/gpt-astra-latest', 'azure_ai/gpt-6-astra')")
    finally:
        await conn.close()
    async with ReadModels.open(pg_dsn) as rm:
        model = await rm.models.get_by_name("azure_ai/gpt-astra-latest")
    assert model is not None
    assert model.name == "azure_ai/gpt-6-astra"
