"""OpenAI-compatible request parsing and response bodies for /v1/chat/completions, /v1/completions and /v1/models.

Tokens are counted by a word-and-punctuation tokenizer; generated text is filler words, one token each.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from specserve_simulator.args import ServeConfig
from specserve_simulator.records import Finished, RequestSpec

TOKEN = re.compile(r"\w+|[^\w\s]")
CHAT_TOKENS_PER_MESSAGE, CHAT_TEMPLATE_TOKENS = 4, 3
DEFAULT_TEMPERATURE = 1.0
WORDS = (
    "the model drafts tokens and the target verifies them in one pass so accepted drafts come for free while "
    "rejected ones cost a little compute each step latency throughput batch cache memory request answer"
).split()
STREAM_CHUNK_WORDS = 4


class RequestError(Exception):
    """A request vLLM would refuse; becomes an OpenAI error body."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.status}}


@dataclass(frozen=True)
class Completion:
    """A parsed request: what the engine runs plus how to answer."""

    chat: bool
    spec: RequestSpec
    stream: bool = False
    include_usage: bool = False


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def parse(body: Any, config: ServeConfig, chat: bool) -> Completion:
    """Validate a chat or text completion body the way vLLM's OpenAI server does (the parts the simulator models)."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    _check_model(body.get("model"), config)
    prompt_tokens = _chat_prompt_tokens(body.get("messages")) if chat else _prompt_tokens(body.get("prompt"))
    requested = body.get("max_tokens")
    if chat and body.get("max_completion_tokens") is not None:
        requested = body["max_completion_tokens"]
    max_tokens = _max_tokens(requested, prompt_tokens, config.max_model_len)
    if body.get("n", 1) != 1:
        raise RequestError(400, "the simulator serves n=1 only", param="n")
    stream_options = body.get("stream_options") or {}
    return Completion(
        chat=chat,
        spec=RequestSpec(
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            temperature=_temperature(body.get("temperature")),
            min_tokens=_non_negative_int(body.get("min_tokens", 0), "min_tokens"),
            ignore_eos=bool(body.get("ignore_eos", False)),
        ),
        stream=bool(body.get("stream", False)),
        include_usage=bool(stream_options.get("include_usage", False)) if isinstance(stream_options, dict) else False,
    )


def response(completion: Completion, finished: Finished, config: ServeConfig, seed: int) -> dict[str, Any]:
    """The whole (non-streaming) chat.completion or text_completion body."""
    text = generated_text(seed, finished.id, finished.output_tokens)
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finished.finish_reason, "stop_reason": None}
    if completion.chat:
        choice["message"] = {"role": "assistant", "content": text, "tool_calls": [], "reasoning_content": None}
    else:
        choice["text"] = text
    return {
        "id": _id(completion),
        "object": "chat.completion" if completion.chat else "text_completion",
        "created": int(time.time()),
        "model": config.model_name,
        "choices": [choice],
        "usage": usage(finished),
    }


def stream_chunks(completion: Completion, finished: Finished, config: ServeConfig, seed: int) -> list[dict[str, Any]]:
    """The server-sent event payloads of a streamed answer (sent once the answer is complete)."""
    words = generated_text(seed, finished.id, finished.output_tokens).split(" ")
    pieces = [" ".join(words[i : i + STREAM_CHUNK_WORDS]) + " " for i in range(0, len(words), STREAM_CHUNK_WORDS)]
    pieces[-1] = pieces[-1].rstrip()
    header = {"id": _id(completion), "object": "chat.completion.chunk" if completion.chat else "text_completion", "created": int(time.time()), "model": config.model_name}
    chunks = []
    for number, piece in enumerate(pieces):
        last = number == len(pieces) - 1
        if completion.chat:
            delta = {"role": "assistant", "content": piece} if number == 0 else {"content": piece}
            choice: dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": piece}
        choice.update(logprobs=None, finish_reason=finished.finish_reason if last else None, stop_reason=None)
        chunks.append({**header, "choices": [choice]})
    if completion.include_usage:
        chunks.append({**header, "choices": [], "usage": usage(finished)})
    return chunks


def models(config: ServeConfig) -> dict[str, Any]:
    names = config.served_model_names or (config.model,)
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "vllm", "root": config.model, "parent": None, "max_model_len": config.max_model_len}
            for name in names
        ],
    }


def usage(finished: Finished) -> dict[str, Any]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.output_tokens,
        "total_tokens": finished.prompt_tokens + finished.output_tokens,
        "prompt_tokens_details": None,
    }


def generated_text(seed: int, request_id: int, tokens: int) -> str:
    rng = random.Random(f"{seed}:text:{request_id}")
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


def _check_model(model: Any, config: ServeConfig) -> None:
    names = config.served_model_names or (config.model,)
    if model is not None and model not in names:
        raise RequestError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")


def _chat_prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list", param="messages")
    total = CHAT_TEMPLATE_TOKENS
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise RequestError(400, "each message needs a role and content", param="messages")
        total += CHAT_TOKENS_PER_MESSAGE + count_tokens(_message_text(message.get("content")))
    return total


def _message_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise RequestError(400, "message content must be a string or a list of parts", param="messages")


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return max(1, count_tokens(prompt))
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return len(prompt)
    raise RequestError(400, "prompt must be a string, a one-string list or a list of token ids", param="prompt")


def _max_tokens(requested: Any, prompt_tokens: int, max_model_len: int) -> int:
    room = max_model_len - prompt_tokens
    if requested is None:
        if room < 1:
            raise RequestError(400, f"This model's maximum context length is {max_model_len} tokens. However, your request has {prompt_tokens} input tokens.")
        return room
    requested = _non_negative_int(requested, "max_tokens")
    if requested < 1:
        raise RequestError(400, "max_tokens must be at least 1, got 0.", param="max_tokens")
    if requested > room:
        raise RequestError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the messages, {requested} in the completion). "
            "Please reduce the length of the messages or completion.",
        )
    return requested


def _temperature(value: Any) -> float:
    if value is None:
        return DEFAULT_TEMPERATURE
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise RequestError(400, f"temperature must be non-negative, got {value}.", param="temperature")
    return float(value)


def _non_negative_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RequestError(400, f"{name} must be a non-negative integer, got {value!r}.", param=name)
    return value


def _id(completion: Completion) -> str:
    return f"{'chatcmpl' if completion.chat else 'cmpl'}-{uuid.uuid4().hex}"
