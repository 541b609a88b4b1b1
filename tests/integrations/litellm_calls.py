"""Real LiteLLM calls made offline (``mock_response``), and what its callbacks were given."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.types.utils import (
    CompletionTokensDetailsWrapper,
    ModelResponse,
    PromptTokensDetailsWrapper,
    Usage,
)
from starlette.requests import Request

MESSAGES = [{"role": "user", "content": "How many tokens is this?"}]


class Capture(CustomLogger):
    """Keeps each finished call's callback arguments, as LiteLLM passes them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict[str, Any], Any]] = []

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        self.calls.append((kwargs, response_obj))

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        self.calls.append((kwargs, response_obj))


@contextmanager
def registered(*callbacks: CustomLogger) -> Iterator[None]:
    """``litellm.callbacks = [...]`` for the block. LiteLLM copies them into lists of its own
    on the first call (and skips a second instance of a class it has): reset those too."""
    litellm.logging_callback_manager._reset_all_callbacks()
    litellm.callbacks = list(callbacks)
    try:
        yield
    finally:
        litellm.logging_callback_manager._reset_all_callbacks()


def response(model: str, usage: Usage) -> ModelResponse:
    return ModelResponse(model=model, usage=usage,
                         choices=[{"message": {"role": "assistant", "content": "four"}}])


async def chat(model: str = "gpt-4o", **options: Any) -> Any:
    return await litellm.acompletion(model=model, messages=MESSAGES,
                                     mock_response=options.pop("mock_response", "Four."),
                                     **options)


async def cached_reasoning(**options: Any) -> Any:
    usage = Usage(prompt_tokens=1200, completion_tokens=300, total_tokens=1500,
                  prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=1024),
                  completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=100))
    return await chat("o3-mini", mock_response=response("o3-mini", usage), **options)


async def cache_write(**options: Any) -> Any:
    usage = Usage(prompt_tokens=3000, completion_tokens=40, total_tokens=3040,
                  cache_creation_input_tokens=2000, cache_read_input_tokens=500)
    return await chat("anthropic/claude-haiku-4-5-20251001",
                      mock_response=response("claude-haiku-4-5-20251001", usage), **options)


async def audio(**options: Any) -> Any:
    usage = Usage(prompt_tokens=700, completion_tokens=900, total_tokens=1600,
                  prompt_tokens_details=PromptTokensDetailsWrapper(audio_tokens=600),
                  completion_tokens_details=CompletionTokensDetailsWrapper(audio_tokens=800))
    return await chat("gpt-4o-audio-preview-2024-12-17",
                      mock_response=response("gpt-4o-audio-preview-2024-12-17", usage), **options)


async def priority(**options: Any) -> Any:
    return await chat("gpt-4o", service_tier="priority", **options)


async def stream(**options: Any) -> Any:
    chunks = await litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                       mock_response="a streamed answer of several words",
                                       stream_options={"include_usage": True}, **options)
    async for _ in chunks:
        pass
    return chunks


async def embedding(**options: Any) -> Any:
    return await litellm.aembedding(model="text-embedding-3-small", input=["one", "two"],
                                    mock_response=[0.1, 0.2], **options)


async def failure(**options: Any) -> Any:
    try:
        await chat("gpt-4o", mock_response=Exception("provider down"), **options)
    except litellm.exceptions.InternalServerError:
        return None
    raise AssertionError("the mocked failure did not raise")


async def image_generation(model: str = "gemini/gemini-3-pro-image-preview",
                           **options: Any) -> Any:
    """An image generation call: LiteLLM reports the images it returned as
    ``output_image_count`` (0.134 each for this model in its price map, 0.0011 per input
    image). Not in CALLS, whose mix the callback benchmark measures."""
    return await litellm.aimage_generation(model=model, prompt="a cat in a hat",
                                           mock_response=options.pop("mock_response", "x"),
                                           **options)


# name -> the call; the successful ones first. Each is one finished call for the callbacks.
CALLS: dict[str, Callable[..., Awaitable[Any]]] = {
    "chat": chat, "cached_reasoning": cached_reasoning, "cache_write": cache_write,
    "audio": audio, "priority": priority, "stream": stream, "embedding": embedding,
    "failure": failure,
}
# The catalog entries these calls are priced from (LiteLLM's own bundled price map).
MODELS = ("gpt-4o", "o3-mini", "claude-haiku-4-5-20251001", "gpt-4o-audio-preview-2024-12-17",
          "gpt-4o-mini", "text-embedding-3-small")


async def settle(capture: Capture, expected: int, timeout: float = 10.0) -> None:
    """LiteLLM runs callbacks in tasks of their own: wait until ``expected`` arrived."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(capture.calls) < expected:
        if loop.time() > deadline:
            raise AssertionError(f"{len(capture.calls)} of {expected} callbacks arrived")
        await asyncio.sleep(0.01)


def proxy_request(body: dict[str, Any], *, headers: list[tuple[bytes, bytes]] | None = None,
                  ) -> Request:
    """A chat completion request as the proxy hands it to custom_auth: the headers an HTTP
    client sends with a JSON body (the ASGI server passes them on) unless ``headers``."""
    payload = json.dumps(body).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    if headers is None:
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(payload)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions",
                    "headers": headers, "query_string": b"", "path_params": {}}, receive)
