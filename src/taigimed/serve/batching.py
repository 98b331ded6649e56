"""Continuous batching for a transformers causal LM: many requests share each decode step.

Why not ``model.generate``: it runs one fixed batch to the end (a request arriving a moment later
waits for the whole batch), and its streamer handles one sequence. Here one worker thread owns
the model and runs a step loop over a *running batch* with a KV cache:

1. Requests wait in a bounded queue (full -> ``Overloaded``, which the server turns into 429).
2. An idle worker waits ``batch_wait_ms`` to gather a first group; a busy one takes waiting
   requests at every step boundary, up to ``max_batch_size`` rows.
3. New rows are prefilled together (left-padded), their first token sampled, and their KV cache
   is merged into the running cache (both left-padded to a common length and concatenated on
   the batch axis). Positions come from each row's own attention mask, so padding never shifts
   a row's positions.
4. Each decode step feeds every row's last token, samples per row (greedy or temperature/top-p/
   top-k with the row's own seeded generator), records the chosen token's log-probability, and
   pushes a per-token event into that request's asyncio queue (thread-safe): streaming comes
   for free.
5. Finished rows (EOS, max_tokens, a stop string, the context limit, or a client that went
   away) leave the batch at once; leading all-padding columns are trimmed from the cache.

Sliding-window models (Gemma 3: five of every six layers attend to the last 512 tokens only):
the cache is always a plain :func:`full_cache`, never transformers' per-layer default. The
default gives sliding layers a ``DynamicSlidingWindowLayer`` that keeps only the last
``window - 1`` positions and a ``cumulative_length`` counter that the mask sizes come from;
rows of different lengths cannot be left-padded and concatenated into it, nor trimmed, without
that counter going wrong (and a merged row of another length shifts which columns are kept).
A full layer keeps every position, so merging, dropping and trimming stay plain tensor
surgery, and the window is still applied: the sliding layers' mask is built on cache columns,
and because each row's padding is all on the left, the column distance between two real tokens
is their position distance. The cost is memory (a sliding layer holds the whole context rather
than 512 positions) which, at ``max_model_len`` 2048 and the 270M model's one KV head, is a few
MB per row.

``max_batch_size=1`` turns this into the naive one-request-at-a-time server the benchmark uses as
its baseline.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from taigimed.quality import trim_partial_char

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The waiting queue is full: the caller should answer 429 with Retry-After."""


# Below this a temperature is greedy decoding: dividing logits by 6.5e-299 (a value a client
# sent) overflows to inf and the softmax to NaN, while any distribution this sharp picks the
# argmax anyway.
MIN_TEMPERATURE = 1e-5


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    top_logprobs: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE


@dataclass
class TokenEvent:
    """One generated token: its id, the text it adds (may be empty), and log-probabilities."""

    token_id: int
    token: str
    text: str
    logprob: float
    top_logprobs: dict[str, float] | None = None


@dataclass
class FinishEvent:
    finish_reason: str  # "stop" | "length" | "abort"
    stop_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    text_tail: str = ""  # text held back (partial UTF-8 or possible stop prefix) released at end


@dataclass
class ErrorEvent:
    message: str


class GenerationHandle:
    """What ``submit`` returns: an async iterator of events for one request."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False
        self.enqueued_at = time.perf_counter()

    def push(self, event: Any) -> None:
        """Called from the worker thread."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # event loop closed: the client is gone
            self.cancelled = True

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[TokenEvent | FinishEvent | ErrorEvent]:
        while True:
            event = await self.events.get()
            yield event
            if isinstance(event, FinishEvent | ErrorEvent):
                return


class _Row:
    """Decoding state of one sequence in the running batch."""

    def __init__(self, handle: GenerationHandle, device: str) -> None:
        self.handle = handle
        self.params = handle.params
        self.generated: list[int] = []
        self.emitted = ""  # text already sent to the client
        self.generator: torch.Generator | None = None
        if not self.params.greedy and self.params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(self.params.seed)
        self.holdback = max((len(s) for s in self.params.stop), default=1) - 1
        self.admitted_at = time.perf_counter()  # when it took its batch slot


class ContinuousBatcher:
    """Owns the model in one worker thread; ``submit`` from any asyncio event loop."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 16,
        batch_wait_ms: float = 10.0,
        max_queue: int = 64,
        max_model_len: int = 2048,
        on_step: Callable[[int], None] | None = None,
        on_finish: Callable[[float], None] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = str(next(model.parameters()).device)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.max_model_len = max_model_len
        self.on_step = on_step
        self.on_finish = on_finish  # seconds a finished request held its slot (admission reads it)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_ids = _eos_ids(model, tokenizer)
        self._queue: queue.Queue[GenerationHandle] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # [B, T] 1 = real token, 0 = padding
        self._last: torch.Tensor | None = None  # [B] last sampled token per row
        self._pos: torch.Tensor | None = None  # [B] position of the next token per row
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams) -> GenerationHandle:
        """Queue a request; raises ``Overloaded`` when the waiting queue is full."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        handle = GenerationHandle(prompt_ids, params)
        try:
            self._queue.put_nowait(handle)
        except queue.Full:
            raise Overloaded(f"{self._queue.maxsize} requests already waiting") from None
        return handle

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # -- worker thread ----------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            try:
                new = self._take_new()
                if new:
                    self._admit(new)
                if self._rows:
                    self._decode_step()
            except Exception as err:  # never let one bad batch kill the server
                log.exception("batcher step failed; failing the running batch")
                for row in self._rows:
                    row.handle.push(ErrorEvent(f"generation failed: {type(err).__name__}: {err}"))
                self._reset()

    def _take_new(self) -> list[GenerationHandle]:
        """Waiting requests that fit: block (then gather) when idle, never block when busy."""
        free = self.max_batch_size - len(self._rows)
        taken: list[GenerationHandle] = []
        if not self._rows:
            try:
                taken.append(self._queue.get(timeout=0.1))
            except queue.Empty:
                return []
            deadline = time.perf_counter() + self.batch_wait_s
            while len(taken) < free:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    taken.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
        while len(taken) < free:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for handle in taken:
            if handle.cancelled:  # gave up while waiting: tell it, never run it
                handle.push(FinishEvent("abort", None, len(handle.prompt_ids), 0))
        return [h for h in taken if not h.cancelled]

    def _admit(self, handles: list[GenerationHandle]) -> None:
        """Prefill new requests together and merge them into the running batch."""
        rows = [_Row(h, self.device) for h in handles]
        width = max(len(h.prompt_ids) for h in handles)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, h in enumerate(handles):
            ids[i, width - len(h.prompt_ids) :] = torch.tensor(h.prompt_ids)
            mask[i, width - len(h.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=full_cache(),
            use_cache=True,
        )
        logits = out.logits[:, -1, :]
        pos = mask.sum(-1)
        self._merge(rows, out.past_key_values, mask, pos)
        offset = len(self._rows) - len(rows)
        tokens = self._sample(logits, rows)
        self._last[offset:] = tokens
        self._emit(rows, tokens, offset, logits)

    def _merge(self, rows: list[_Row], cache: Any, mask: torch.Tensor, pos: torch.Tensor) -> None:
        if not self._rows:
            self._rows, self._cache, self._mask, self._pos = rows, cache, mask, pos
            self._last = torch.zeros(len(rows), dtype=torch.long, device=self.device)
            return
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)
        _left_pad_cache(self._cache, width - old_t)
        _left_pad_cache(cache, width - new_t)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat([old_layer.keys, new_layer.keys], dim=0)
            old_layer.values = torch.cat([old_layer.values, new_layer.values], dim=0)
        self._mask = torch.cat(
            [F.pad(self._mask, (width - old_t, 0)), F.pad(mask, (width - new_t, 0))], dim=0
        )
        self._pos = torch.cat([self._pos, pos])
        self._last = torch.cat(
            [self._last, torch.zeros(len(rows), dtype=torch.long, device=self.device)]
        )
        self._rows = self._rows + rows

    def _decode_step(self) -> None:
        ones = torch.ones((len(self._rows), 1), dtype=torch.long, device=self.device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        out = self.model(
            input_ids=self._last[:, None],
            attention_mask=self._mask,
            position_ids=self._pos[:, None],
            past_key_values=self._cache,
            use_cache=True,
        )
        self._cache = out.past_key_values
        self._pos = self._pos + 1
        logits = out.logits[:, -1, :]
        tokens = self._sample(logits, self._rows)
        self._last = tokens
        if self.on_step is not None:
            self.on_step(len(self._rows))
        self._emit(self._rows, tokens, 0, logits)

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Greedy rows take the argmax; sampling rows draw with their own settings."""
        tokens = logits.argmax(-1)
        for i, row in enumerate(rows):
            p = row.params
            if p.greedy:
                continue
            scores = logits[i].float() / p.temperature
            if p.top_k > 0:
                kth = torch.topk(scores, min(p.top_k, scores.numel())).values[-1]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            if p.top_p < 1.0:
                sorted_scores, order = torch.sort(scores, descending=True)
                cum = sorted_scores.softmax(-1).cumsum(-1)
                drop = cum - sorted_scores.softmax(-1) > p.top_p
                scores[order[drop]] = float("-inf")
            probs = scores.softmax(-1)
            tokens[i] = torch.multinomial(probs, 1, generator=row.generator)[0]
        return tokens

    def _emit(self, rows: list[_Row], tokens: torch.Tensor, offset: int, logits) -> None:
        """Send each row its token event; finish and drop rows that are done."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = logprobs.gather(1, tokens[:, None]).squeeze(1).tolist()
        k = max((r.params.top_logprobs for r in rows), default=0)
        top = torch.topk(logprobs, k) if k else None
        token_list = tokens.tolist()
        done: list[int] = []
        for i, row in enumerate(rows):
            if row.handle.cancelled:
                row.handle.push(self._finish(row, "abort", None))
                done.append(offset + i)
                continue
            token_id = token_list[i]
            is_eos = token_id in self.eos_ids and not row.params.ignore_eos
            tops = None
            if row.params.top_logprobs and top is not None:
                tops = {
                    self._token_text(t): v
                    for t, v in zip(
                        top.indices[i, : row.params.top_logprobs].tolist(),
                        top.values[i, : row.params.top_logprobs].tolist(),
                        strict=True,
                    )
                }
            row.generated.append(token_id)
            text, stop_hit = ("", None) if is_eos else self._advance_text(row)
            row.handle.push(TokenEvent(token_id, self._token_text(token_id), text, chosen[i], tops))
            reason = None
            if is_eos or stop_hit is not None:
                reason = "stop"
            elif len(row.generated) >= min(
                row.params.max_tokens, self.max_model_len - len(row.handle.prompt_ids)
            ):
                reason = "length"
            if reason:
                row.handle.push(self._finish(row, reason, stop_hit))
                done.append(offset + i)
                if self.on_finish is not None:
                    self.on_finish(time.perf_counter() - row.admitted_at)
        if done:
            self._drop(done)

    def _advance_text(self, row: _Row) -> tuple[str, str | None]:
        """New text for the client, holding back partial characters and possible stop prefixes."""
        full = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        for stop in row.params.stop:
            start = max(0, len(row.emitted) - len(stop))
            idx = full.find(stop, start)
            if idx != -1:
                delta = full[len(row.emitted) : idx] if idx > len(row.emitted) else ""
                row.emitted += delta
                return delta, stop
        safe = full.rstrip("\ufffd") if full.endswith("\ufffd") else full
        if row.holdback:
            safe = safe[: max(len(row.emitted), len(safe) - row.holdback)]
        delta = safe[len(row.emitted) :]
        row.emitted += delta
        return delta, None

    def _finish(self, row: _Row, reason: str, stop_hit: str | None) -> FinishEvent:
        tail = ""
        if reason == "length" or (reason == "stop" and stop_hit is None):
            full = self.tokenizer.decode(row.generated, skip_special_tokens=True)
            tail = full[len(row.emitted) :] if full.startswith(row.emitted) else ""
            if reason == "length":
                # Cut inside a multi-byte character: end at the last whole one, on both routes
                # (the plain answer and the stream both take this tail).
                tail = trim_partial_char(tail)
        return FinishEvent(
            finish_reason=reason,
            stop_reason=stop_hit,
            prompt_tokens=len(row.handle.prompt_ids),
            completion_tokens=len(row.generated),
            text_tail=tail,
        )

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _drop(self, indices: list[int]) -> None:
        """Remove finished rows from the batch and trim columns that are padding everywhere."""
        drop = set(indices)
        keep = [i for i in range(len(self._rows)) if i not in drop]
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self.device)
        self._rows = [self._rows[i] for i in keep]
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._pos = self._pos[index]
        self._last = self._last[index]
        first_real = int(self._mask.argmax(dim=1).min())  # argmax finds each row's first 1
        if first_real > 0:
            self._mask = self._mask[:, first_real:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[..., first_real:, :]
                layer.values = layer.values[..., first_real:, :]

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._pos, self._last = [], None, None, None, None


def full_cache() -> Any:
    """An empty cache whose every layer keeps every position (see the module docstring): the
    only kind whose rows can be merged, dropped and trimmed, sliding-window layers included."""
    from transformers import DynamicCache

    return DynamicCache()  # no config: every layer a full DynamicLayer, none sliding


def _left_pad_cache(cache: Any, pad: int) -> None:
    if pad <= 0:
        return
    for layer in cache.layers:
        layer.keys = F.pad(layer.keys, (0, 0, pad, 0))
        layer.values = F.pad(layer.values, (0, 0, pad, 0))


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids from the generation config and the tokenizer (may be several)."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids
