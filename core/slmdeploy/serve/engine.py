"""The continuous-batching engine: one thread per served model steps its `Decoder` over a fixed pool of rows.

The HTTP layer sees a small interface: `EngineWorker.submit` a `Job`, `cancel` it, and read its events from
``job.events`` (`Delta` pieces of text, then `Finished` or `Failed`). Inside, each *step* is:

1. prefill: up to ``prefill_chunk`` prompt tokens in all, from the requests still reading their prompts, the one with
   the fewest tokens left first (one passed over three steps in a row goes first), each its next chunk in a run of
   its own (batch size 1), and the first's always; a request whose prompt is read draws its first token and starts
   decoding;
2. decode: one token for every row that is decoding, in one run (with runtime LoRA adapters, one run per adapter
   among the decoding rows: `slmdeploy.serve.decoder`).

So a step costs one decode run for the whole batch plus at most one chunk's worth of prompt tokens: decoding rows
are never stalled for longer than one chunk by newcomers' prompts, and a newcomer starts reading its prompt at the
first step after it arrives, several short prompts in the same step (llama-server with ``-cb`` also fills each batch
with every slot's next token first, then prompt tokens).
A request waits only while every row is taken. A row is freed the moment its request ends, is cancelled (the client
left, or its time ran out) or the server shuts down; the next waiting request takes it at the next step.

Prompts that start alike are read once (prefix reuse, as llama-server's ``cache_prompt`` and vLLM's prefix caching
do): a freed row keeps the keys and values of its prompt's whole chunks (`Kept`), and a newcomer whose prompt starts
with the same chunks takes that row and reads only the rest; when a busy row holds them (requests sharing a system
prompt, arriving together), a free row is given a copy of them (a memcpy). Only whole chunks are reused, so the
chunks still to read are the very runs a fresh read would make, on the same values: the answer is the same, bit for
bit, as with nothing kept.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from typing import Any

import attrs

from slmdeploy.serve.decoder import PLACEHOLDER
from slmdeploy.serve.events import Delta, Event, Failed, Finished, Job, TokenLogprob
from slmdeploy.serve.guidance import Grammar, compile_grammar
from slmdeploy.serve.models import LoadedModel
from slmdeploy.serve.sampling import Choice, RowSampler
from slmdeploy.serve.text import TokenText

IDLE_WAIT_S = 0.5
STARVED_STEPS = 3
"""A prompt passed over this many steps in a row (shorter ones went first) gets the next step's first chunk."""


@attrs.define(eq=False)
class Row:
    """A request holding a KV row: its prompt, how much of it is read, and its answer so far."""

    job: Job
    sampler: RowSampler
    text: TokenText
    grammar: Grammar | None
    read: int = 0
    """Prompt tokens in the cache."""
    length: int = 0
    """Tokens in the cache (prompt and answer) once decoding."""
    last: int = -1
    """The token drawn last, to be fed at the next decode."""
    generated: int = 0
    passed_over: int = 0
    """Steps in a row in which this prompt got no chunk."""
    answer: list[int] = attrs.field(factory=list)

    @property
    def decoding(self) -> bool:
        return self.read == len(self.job.ids)


@attrs.define
class Kept:
    """The prompt tokens whose keys and values a row's cache holds from whole chunk runs (positions 0..n-1), and the
    runtime LoRA adapter they were read with (None: the base)."""

    tokens: list[int] = attrs.field(factory=list)
    adapter: str | None = None

    def reusable(self, ids: list[int], chunk: int, adapter: str | None) -> int:
        """How many of `ids`, read with `adapter`, can be taken from this cache: whole chunks that match (read with the
        same adapter), and one token left to read."""
        if not chunk or not self.tokens or adapter != self.adapter:
            return 0
        common = 0
        for kept, new in zip(self.tokens, ids, strict=False):
            if kept != new:
                break
            common += 1
        return min(common, len(ids) - 1) // chunk * chunk


class EngineWorker:
    """The thread that owns a model's decoder: start it, `submit` jobs, `cancel` them, `stop` it."""

    def __init__(self, loaded: LoadedModel, max_batch: int, drawn: Any = None, reused: Any = None) -> None:
        """`drawn`: a counter (``inc()``) of the tokens drawn, every row's, as they are drawn; `reused`: one
        (``inc(n)``) of the prompt tokens taken from a row's kept cache instead of being read."""
        self.loaded = loaded
        self.drawn = drawn
        self.reused = reused
        self.max_batch = max_batch
        self.commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"engine {loaded.spec.name}", daemon=True)
        self.rows: list[Row | None] = [None] * max_batch
        self.kept = [Kept() for _ in range(max_batch)]
        self.reused_tokens = 0
        """Prompt tokens taken from kept caches so far."""
        self.waiting: collections.deque[Job] = collections.deque()
        self.steps = 0
        """Steps run so far (tests read it to see when a request joined)."""

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.commands.put(("start", job))

    def cancel(self, job: Job) -> None:
        self.commands.put(("cancel", job))

    def stop(self, message: str) -> None:
        """Fail every job with `message` (status 503) and end the thread."""
        self.commands.put(("stop", message))

    def _run(self) -> None:
        while self._take_commands(wait=not self.waiting and not any(self.rows)):
            try:
                self._admit()
                if any(self.rows):
                    self._step()
            except Exception as error:  # noqa: BLE001 - the runtime failed: the requests in hand hear why, and the
                self._fail_all(f"the runtime failed: {error}", 500)  # engine goes on with the next ones

    def _take_commands(self, wait: bool) -> bool:
        try:
            commands = [self.commands.get(timeout=IDLE_WAIT_S)] if wait else []
        except queue.Empty:
            return True
        while not self.commands.empty():
            commands.append(self.commands.get_nowait())
        for verb, argument in commands:
            if verb == "stop":
                self.waiting.extend(job for verb, job in commands if verb == "start")
                self._fail_all(argument, 503)
                return False
            if verb == "start":
                self.waiting.append(argument)
            else:
                self._cancel(argument)
        return True

    def _admit(self) -> None:
        """Waiting requests take the free row whose kept cache starts their prompt, else the lowest free row that
        keeps nothing, else the lowest (decode runs over rows 0..n-1, so low rows keep n small)."""
        while self.waiting and None in self.rows:
            job = self.waiting.popleft()
            try:
                grammar = compile_grammar(self.loaded, job.sampling.guidance) if job.sampling.guidance else None
            except ValueError as error:
                _post([(job, Failed(f"the request's response_format cannot be followed: {error}", 400))])
                continue
            loaded = self.loaded
            sampler = RowSampler(job.sampling, loaded.defaults, loaded.eos, job.ids)
            text = TokenText(loaded.tokenizer, loaded.eos, job.sampling.stops)
            index, reuse = self._free_row_for(job.ids, job.adapter)
            self.rows[index] = Row(job, sampler, text, grammar, read=reuse)
            if reuse:
                self.reused_tokens += reuse
                if self.reused is not None:
                    self.reused.inc(reuse)

    def _free_row_for(self, ids: list[int], adapter: str | None) -> tuple[int, int]:
        """The free row to take for a prompt, and how many of its tokens that row's cache holds: the free row whose
        kept chunks start the prompt, or a free row given a copy of a busy row's chunks when those go further."""
        chunk = self.loaded.prefill_chunk
        reuse = [self._held(index).reusable(ids, chunk, adapter) for index in range(self.max_batch)]
        free = [index for index, row in enumerate(self.rows) if row is None]
        # the most reuse; else a row that keeps nothing (other prompts' chunks stay for later), the lowest first
        taken = min(free, key=lambda index: (-reuse[index], bool(self.kept[index].tokens), index))
        source = max(range(self.max_batch), key=lambda index: (reuse[index], self.rows[index] is None))
        if reuse[source] <= reuse[taken]:
            return taken, reuse[taken]
        taken = min(free, key=lambda index: (bool(self.kept[index].tokens), index))
        self.loaded.decoder.copy_prefix(source, taken, reuse[source])  # a busy row read them: a memcpy, not a run
        return taken, reuse[source]

    def _held(self, index: int) -> Kept:
        """The prompt chunks row `index` holds: a busy row's read so far, a free row's kept ones."""
        row, chunk = self.rows[index], self.loaded.prefill_chunk
        if row is None:
            return self.kept[index]
        return Kept(list(row.job.ids[: row.read // chunk * chunk]) if chunk else [], row.job.adapter)

    def _step(self) -> None:
        out: list[tuple[Job, Event]] = []
        reading = sorted((row for row in self.rows if row is not None and not row.decoding), key=_reading_order)
        budget = self.loaded.prefill_chunk or sum(len(row.job.ids) for row in reading)
        served = 0
        for row in reading:  # each its next chunk, while the step's budget holds it (one at least)
            size = self._chunk_size(row)
            if size > budget and row is not reading[0]:
                break
            budget -= size
            self._prefill(row, size, out)
            row.passed_over, served = 0, served + 1
        for row in reading[served:]:
            row.passed_over += 1
        decoding = [index for index, row in enumerate(self.rows) if row is not None and row.decoding]
        if decoding:
            self._decode(decoding[-1] + 1, out)
        self.steps += 1
        _post(out)

    def _chunk_size(self, row: Row) -> int:
        """The row's next chunk: up to the next multiple of the chunk size (the chunks onnxruntime-genai reads)."""
        rest = len(row.job.ids) - row.read
        return min(rest, self.loaded.prefill_chunk) if self.loaded.prefill_chunk else rest

    def _prefill(self, row: Row, size: int, out: list[tuple[Job, Event]]) -> None:
        ids = row.job.ids[row.read : row.read + size]
        logits = self.loaded.decoder.prefill(self.rows.index(row), ids, row.read, row.job.adapter)
        row.read += len(ids)
        if row.decoding:
            row.length = row.read
            self._take(row, logits, out)

    def _decode(self, count: int, out: list[tuple[Job, Event]]) -> None:
        rows = self.rows[:count]
        tokens = [row.last if row is not None and row.decoding else 0 for row in rows]
        # A row not decoding gets a placeholder just past what it holds: its prompt so far, or a free row's kept chunks
        lengths = [
            (row.length if row.decoding else row.read) if row is not None else len(self.kept[index].tokens)
            for index, row in enumerate(rows)
        ]
        adapters = [row.job.adapter if row is not None and row.decoding else PLACEHOLDER for row in rows]
        logits = self.loaded.decoder.decode(tokens, lengths, adapters)
        for index, row in enumerate(rows):
            if row is not None and row.decoding and self.rows[index] is row:
                row.length += 1
                self._take(row, logits[index], out)

    def _take(self, row: Row, logits: Any, out: list[tuple[Job, Event]]) -> None:
        """Draw `row`'s next token from `logits`, send its text, and end the request if it is done."""
        choice = row.sampler.choose(logits, row.grammar.allowed() if row.grammar else None)
        if self.drawn is not None:
            self.drawn.inc()
        row.last = choice.token
        row.answer.append(choice.token)
        eos = choice.token in self.loaded.eos
        if not eos:
            row.generated += 1
        if row.grammar is not None and not eos and not row.grammar.accept(choice.token):
            out.append((row.job, Failed(f"the response format's grammar failed: {row.grammar.error()}", 500)))
            self._free(row.job)
            return
        text = row.text.feed(choice.token)
        if text or (choice.logprob is not None and not eos):
            out.append((row.job, Delta(text, self._logprobs(choice) if not eos else ())))
        sampling = row.job.sampling
        if eos or row.text.stopped or (row.grammar is not None and row.grammar.finished()):
            self._finish(row, "stop", out)
        elif row.generated >= sampling.max_new or row.length + 1 > self.loaded.decoder.capacity:
            self._finish(row, "length", out)

    def _logprobs(self, choice: Choice) -> tuple[TokenLogprob, ...]:
        if choice.logprob is None:
            return ()
        decode = self.loaded.tokenizer.decode
        top = tuple((decode([token]), logprob) for token, logprob in choice.top)
        return (TokenLogprob(decode([choice.token]), choice.logprob, top),)

    def _finish(self, row: Row, reason: str, out: list[tuple[Job, Event]]) -> None:
        if rest := row.text.stop.flush():
            out.append((row.job, Delta(rest)))
        out.append((row.job, Finished(reason, len(row.job.ids), row.generated, tuple(row.answer))))
        self._free(row.job)

    def _cancel(self, job: Job) -> None:
        with contextlib.suppress(ValueError):
            self.waiting.remove(job)
        self._free(job)

    def _free(self, job: Job) -> None:
        chunk = self.loaded.prefill_chunk
        for index, row in enumerate(self.rows):
            if row is not None and row.job is job:
                self.rows[index] = None
                whole = row.read // chunk * chunk if chunk else 0  # positions written by whole chunk runs
                self.kept[index] = Kept(list(job.ids[:whole]), job.adapter)

    def _fail_all(self, message: str, status: int) -> None:
        jobs = [*(row.job for row in self.rows if row is not None), *self.waiting]
        self.rows = [None] * self.max_batch
        self.kept = [Kept() for _ in range(self.max_batch)]  # the runtime failed: what the cache holds is unknown
        self.waiting.clear()
        _post([(job, Failed(message, status)) for job in jobs])


def _reading_order(row: Row) -> tuple[bool, int, int]:
    """Prompts with the fewest tokens left to read first (a short prompt is not held up for a long one's whole
    prefill), except one passed over `STARVED_STEPS` steps in a row, which goes first; then by arrival."""
    return row.passed_over < STARVED_STEPS, len(row.job.ids) - row.read, row.job.sequence


def _post(out: list[tuple[Job, Event]]) -> None:
    """Hand a step's events to the event loops in one call each (a closed loop has no one left to tell)."""
    by_loop: dict[Any, list[tuple[Job, Event]]] = {}
    for job, event in out:
        by_loop.setdefault(job.loop, []).append((job, event))
    for loop, events in by_loop.items():

        def deliver(events: list[tuple[Job, Event]] = events) -> None:
            for job, event in events:
                job.events.put_nowait(event)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver)
