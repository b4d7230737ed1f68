"""A loopback provider for the conformance suite: OpenAI Chat Completions and Anthropic Messages.

Tests script what the provider answers and read back what went on the wire (fixture ``wire`` in
this directory's conftest.py; from another directory: ``from conformance.conf_wire import ...``)::

    wire.queue(Reply(text="Paris", usage=Usage(input=1200, output=3, cached=1024)))
    wire.queue(Fail(429, retry_after=0.05), Reply(text="ok"))      # several at once, answered in order
    model = ChatOpenAI(model="gpt-4o", base_url=wire.openai_url, api_key=API_KEY)
    ChatAnthropic(model="claude-sonnet-4-5", base_url=wire.anthropic_url, api_key=ANTHROPIC_KEY)
    llama_index.llms.openai.OpenAI(model="gpt-4o", api_base=wire.openai_url, api_key=API_KEY)
    ...
    wire.requests[-1].body         # the JSON the client sent (messages, temperature, tools, ...)
    wire.requests[-1].headers      # lower-cased header names
    wire.requests[-1].retry_count  # the SDK's x-stainless-retry-count (0 on a first attempt)
    wire.requests[-1].reply        # the Reply/Fail it was answered with (concurrent requests)
    wire.pending                   # replies not yet taken

A ``Reply`` is provider-neutral: the server renders it in the format of the path it was asked on
(``/v1/chat/completions`` or ``/v1/messages``), as JSON or as SSE when the request says
``"stream": true`` (OpenAI's usage chunk only when ``stream_options.include_usage``). So one
scripted reply serves ``invoke`` and ``stream`` alike, and the test knows exactly what the
provider said. ``Reply(calls=[Call(name, args, id)])`` asks for tools, ``first_token_delay`` holds
the first content delta back after the token-less opening chunk, ``cut_after`` drops a stream
mid-way, ``refusal`` is OpenAI's refusal; ``Fail(status)`` answers 429/400/401/500/503/529 in the
provider's error format (``retry_after`` sets Retry-After). One queue serves both paths, first in
first out; a request that finds the queue empty gets a 400 naming the path (never a retried
status). Every answer closes its connection.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-conformance-0123456789abcdefSECRET"  # must never reach the database
ANTHROPIC_KEY = "sk-ant-api03-conformance-0123456789SECRET"

DATED = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
}


@dataclass(frozen=True)
class Usage:
    """Provider-neutral usage. ``input`` is every billed input token (cache reads and writes
    included), as SIGNALS.md counts it; the server splits it the way each provider reports it:
    OpenAI's ``prompt_tokens`` include the cached ones, Anthropic's ``input_tokens`` do not."""

    input: int = 1200
    output: int = 40
    cached: int = 0
    cache_write: int = 0  # Anthropic's cache_creation_input_tokens; OpenAI's cache_write_tokens when > 0
    reasoning: int | None = None  # OpenAI only

    @property
    def total(self) -> int:
        return self.input + self.output


OPENAI_USAGE = Usage(input=1200, output=40, cached=1024, reasoning=8)
ANTHROPIC_USAGE = Usage(input=1500, output=40, cached=1024, cache_write=300)


@dataclass(frozen=True)
class Call:
    """A tool call the model asks for. ``id`` defaults to a provider-shaped id."""

    name: str
    args: dict
    id: str | None = None


@dataclass
class Reply:
    """A successful answer: text and/or tool calls.

    ``model``: the dated version answered with (default: ``DATED`` of the model asked for).
    ``usage``: ``None`` for no usage at all; default per provider (OPENAI_USAGE / ANTHROPIC_USAGE).
    ``finish``: default ``tool_calls``/``tool_use`` when there are calls, else ``stop``/``end_turn``.
    ``first_token_delay``: seconds between the token-less opening (OpenAI's role-only chunk,
    Anthropic's ``message_start``) and the first content or tool-call delta; for a JSON answer,
    the delay before the whole answer.
    ``pieces``: how many deltas the text (and each call's arguments) is streamed in.
    ``cut_after``: a stream that fails mid-way: the connection drops after that many text deltas.
    """

    text: str | None = None
    calls: list[Call] = field(default_factory=list)
    model: str | None = None
    usage: Usage | None | str = "default"
    finish: str | None = None
    first_token_delay: float = 0.0
    pieces: int = 3
    cut_after: int | None = None  # streams only: drop the connection after this many text deltas
    refusal: str | None = None  # OpenAI only: message.refusal (structured outputs' refusal)


@dataclass
class Fail:
    """An error answer in the provider's own error format.

    ``kind``: ``rate_limit`` (429), ``context_length`` (400), ``auth`` (401), ``server`` (500),
    ``overloaded`` (503, or 529 as Anthropic sends it). ``retry_after`` (seconds) sets
    ``Retry-After`` and ``retry-after-ms``; the SDKs honour it, so retries stay fast.
    """

    status: int
    kind: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = {429: "rate_limit", 400: "context_length", 401: "auth", 500: "server",
                         503: "overloaded", 529: "overloaded"}.get(self.status, "server")


@dataclass
class Seen:
    """A request as the server received it."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.monotonic() when the body was read
    reply: Reply | Fail | None = None  # what the server answered it with

    @property
    def retry_count(self) -> int:
        """The SDK's own attempt counter (``x-stainless-retry-count``), 0 on the first try."""
        return int(self.headers.get("x-stainless-retry-count", "0"))


def _split(text: str, n: int) -> list[str]:
    if not text:
        return []
    n = max(1, min(n, len(text)))
    step = -(-len(text) // n)
    return [text[i:i + step] for i in range(0, len(text), step)]


class WireServer:
    """A ThreadingHTTPServer on 127.0.0.1:<ephemeral> with a reply queue and a request log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Reply | Fail] = []
        self.requests: list[Seen] = []
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="conformance-wire", daemon=True)
        self._thread.start()
        host, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self.openai_url = self.base_url + "/v1"  # ChatOpenAI(base_url=...), OpenAI(api_base=...)
        self.anthropic_url = self.base_url  # ChatAnthropic(base_url=...): the SDK adds /v1/messages

    # -- scripting -----------------------------------------------------------------------------

    def queue(self, *replies: Reply | Fail) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _take(self, seen: Seen) -> Reply | Fail | None:
        with self._lock:
            self.requests.append(seen)
            seen.reply = self._queue.pop(0) if self._queue else None
            return seen.reply


class _Handler(BaseHTTPRequestHandler):
    # Every answer closes its connection: the SDKs cache their async HTTP clients across event
    # loops, and a kept-alive connection of a finished loop (one test's asyncio.run) breaks the
    # next loop's first request into a retry that would eat a scripted reply.
    protocol_version = "HTTP/1.1"
    server_owner: WireServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.close_connection = True
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test): fine
            pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = self.path.split("?")[0]
        seen = Seen(path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
        reply = self.server_owner._take(seen)
        anthropic = path.endswith("/messages")
        if not path.endswith(("/chat/completions", "/messages")):
            return self._json(404, {"error": {"message": f"conformance server: unknown path {path}"}})
        if reply is None:
            return self._json(400, {"error": {"message": f"conformance server: no reply queued for POST {path}",
                                              "type": "invalid_request_error"}})
        if isinstance(reply, Fail):
            return self._fail(reply, anthropic, body or {})
        asked = (body or {}).get("model") or "unknown-model"
        model = reply.model or DATED.get(asked, asked)
        stream = bool((body or {}).get("stream"))
        if anthropic:
            usage = ANTHROPIC_USAGE if reply.usage == "default" else reply.usage
            if stream:
                return self._anthropic_stream(reply, model, usage)
            time.sleep(reply.first_token_delay)
            return self._json(200, _anthropic_message(reply, model, usage))
        usage = OPENAI_USAGE if reply.usage == "default" else reply.usage
        if stream:
            include_usage = bool(((body or {}).get("stream_options") or {}).get("include_usage"))
            return self._openai_stream(reply, model, usage if include_usage else None, include_usage)
        time.sleep(reply.first_token_delay)
        return self._json(200, _openai_completion(reply, model, usage))

    # -- plumbing ------------------------------------------------------------------------------

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("connection", "close")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _sse_open(self) -> None:
        self.send_response(200)
        self.send_header("connection", "close")
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def _sse(self, data: Any, event: str | None = None) -> None:
        text = (f"event: {event}\n" if event else "") + "data: " + (data if isinstance(data, str) else json.dumps(data))
        chunk = (text + "\n\n").encode()
        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.wfile.flush()

    def _cut(self) -> None:
        """The connection drops mid-stream (no terminating chunk): the client sees an incomplete body."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(2)

    def _sse_close(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _fail(self, fail: Fail, anthropic: bool, body: dict) -> None:
        headers: dict[str, str] = {}
        if fail.retry_after is not None:
            headers["retry-after"] = f"{fail.retry_after:g}"
            headers["retry-after-ms"] = str(int(fail.retry_after * 1000))
        model = body.get("model") or "unknown-model"
        if anthropic:
            kind, message = {
                "rate_limit": ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit "
                                                   "(https://docs.claude.com/en/api/rate-limits)"),
                "context_length": ("invalid_request_error", "prompt is too long: 212345 tokens > 200000 maximum"),
                "auth": ("authentication_error", "invalid x-api-key"),
                "server": ("api_error", "Internal server error"),
                "overloaded": ("overloaded_error", "Overloaded"),
            }[fail.kind]
            payload = {"type": "error", "error": {"type": kind, "message": message},
                       "request_id": "req_011CTconformance"}
            headers["request-id"] = "req_011CTconformance"
            return self._json(fail.status, payload, headers)
        masked = API_KEY[:7] + "*" * 20 + API_KEY[-4:]  # as OpenAI shows a wrong key
        error = {
            "rate_limit": {"message": f"Rate limit reached for {model} in organization org-conformance on tokens per "
                                      "min (TPM): Limit 30000, Used 30000, Requested 1200. Please try again in 50ms.",
                           "type": "tokens", "param": None, "code": "rate_limit_exceeded"},
            "context_length": {"message": "This model's maximum context length is 128000 tokens. However, your "
                                          "messages resulted in 131072 tokens. Please reduce the length of the messages.",
                               "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"},
            "auth": {"message": f"Incorrect API key provided: {masked}. You can find your API key at "
                                "https://platform.openai.com/account/api-keys.",
                     "type": "invalid_request_error", "param": None, "code": "invalid_api_key"},
            "server": {"message": "The server had an error while processing your request. Sorry about that!",
                       "type": "server_error", "param": None, "code": None},
            "overloaded": {"message": "The engine is currently overloaded, please try again later",
                           "type": "server_error", "param": None, "code": None},
        }[fail.kind]
        headers["x-request-id"] = "req_conformance"
        self._json(fail.status, {"error": error}, headers)

    # -- OpenAI --------------------------------------------------------------------------------

    def _openai_stream(self, reply: Reply, model: str, usage: Usage | None, include_usage: bool) -> None:
        base = {"id": "chatcmpl-conformance", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "system_fingerprint": "fp_conformance", "service_tier": "default"}

        def chunk(delta: dict | None, finish: str | None = None) -> dict:
            out = {**base, "choices": [] if delta is None else
                   [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                out["usage"] = None
            return out

        self._sse_open()
        # the token-less opening chunk, as OpenAI sends it (content "" with text, null with tool calls)
        self._sse(chunk({"role": "assistant", "content": "" if reply.text is not None else None, "refusal": None}))
        time.sleep(reply.first_token_delay)
        for n, piece in enumerate(_split(reply.text or "", reply.pieces)):
            if n == reply.cut_after:
                return self._cut()
            self._sse(chunk({"content": piece}))
        if reply.refusal:
            self._sse(chunk({"refusal": reply.refusal}))
        for i, call in enumerate(reply.calls):
            cid = call.id or f"call_conf{i}"
            self._sse(chunk({"tool_calls": [{"index": i, "id": cid, "type": "function",
                                             "function": {"name": call.name, "arguments": ""}}]}))
            for piece in _split(json.dumps(call.args), reply.pieces):
                self._sse(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
        self._sse(chunk({}, reply.finish or ("tool_calls" if reply.calls else "stop")))
        if include_usage:
            final = {**base, "choices": [], "usage": _openai_usage(usage)}
            self._sse(final)
        self._sse("[DONE]")
        self._sse_close()

    # -- Anthropic -----------------------------------------------------------------------------

    def _anthropic_stream(self, reply: Reply, model: str, usage: Usage | None) -> None:
        self._sse_open()
        start_usage = _anthropic_usage(usage, output=1) if usage is not None else {"input_tokens": 0, "output_tokens": 0}
        self._sse({"type": "message_start", "message": {
            "id": "msg_01Conformance", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}, "message_start")
        self._sse({"type": "ping"}, "ping")
        time.sleep(reply.first_token_delay)
        index = 0
        if reply.text is not None:
            self._sse({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                      "content_block_start")
            for n, piece in enumerate(_split(reply.text, reply.pieces)):
                if n == reply.cut_after:
                    return self._cut()
                self._sse({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                          "content_block_delta")
            self._sse({"type": "content_block_stop", "index": index}, "content_block_stop")
            index += 1
        for i, call in enumerate(reply.calls):
            cid = call.id or f"toolu_01Conf{i}"
            self._sse({"type": "content_block_start", "index": index,
                       "content_block": {"type": "tool_use", "id": cid, "name": call.name, "input": {}}},
                      "content_block_start")
            for piece in _split(json.dumps(call.args), reply.pieces):
                self._sse({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": piece}}, "content_block_delta")
            self._sse({"type": "content_block_stop", "index": index}, "content_block_stop")
            index += 1
        # cumulative counts, input included, as the API sends them today (langchain-anthropic reads only these)
        delta_usage = {"output_tokens": 0}
        if usage is not None:
            delta_usage = _anthropic_usage(usage, usage.output)
            delta_usage.pop("service_tier")
        self._sse({"type": "message_delta", "delta": {"stop_reason": reply.finish or ("tool_use" if reply.calls else "end_turn"),
                                                      "stop_sequence": None}, "usage": delta_usage}, "message_delta")
        self._sse({"type": "message_stop"}, "message_stop")
        self._sse_close()


def _openai_usage(usage: Usage | None) -> dict | None:
    if usage is None:
        return None
    prompt_details = {"cached_tokens": usage.cached, "audio_tokens": 0}
    if usage.cache_write:  # (newer API versions report prompt-cache writes too)
        prompt_details["cache_write_tokens"] = usage.cache_write
    return {"prompt_tokens": usage.input, "completion_tokens": usage.output, "total_tokens": usage.total,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning or 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _openai_completion(reply: Reply, model: str, usage: Usage | None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": reply.refusal, "annotations": []}
    if reply.calls:
        message["tool_calls"] = [{"id": c.id or f"call_conf{i}", "type": "function",
                                  "function": {"name": c.name, "arguments": json.dumps(c.args)}}
                                 for i, c in enumerate(reply.calls)]
    out = {"id": "chatcmpl-conformance", "object": "chat.completion", "created": int(time.time()), "model": model,
           "system_fingerprint": "fp_conformance", "service_tier": "default",
           "choices": [{"index": 0, "message": message, "logprobs": None,
                        "finish_reason": reply.finish or ("tool_calls" if reply.calls else "stop")}]}
    if usage is not None:
        out["usage"] = _openai_usage(usage)
    return out


def _anthropic_usage(usage: Usage, output: int) -> dict:
    return {"input_tokens": usage.input - usage.cached - usage.cache_write,
            "cache_creation_input_tokens": usage.cache_write, "cache_read_input_tokens": usage.cached,
            "output_tokens": output, "service_tier": "standard"}


def _anthropic_message(reply: Reply, model: str, usage: Usage | None) -> dict:
    content: list[dict] = []
    if reply.text is not None:
        content.append({"type": "text", "text": reply.text})
    for i, c in enumerate(reply.calls):
        content.append({"type": "tool_use", "id": c.id or f"toolu_01Conf{i}", "name": c.name, "input": c.args})
    return {"id": "msg_01Conformance", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reply.finish or ("tool_use" if reply.calls else "end_turn"), "stop_sequence": None,
            "usage": _anthropic_usage(usage, usage.output) if usage is not None else {"input_tokens": 0, "output_tokens": 0}}
