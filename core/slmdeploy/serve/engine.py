"""The continuous-batching engine: one thread per served model steps its `Decoder` over a fixed pool of rows.

The HTTP layer sees a small interface: `EngineWorker.submit` a `Job`, `cancel` it, and read its events from
``job.events`` (`Delta` pieces of text, then `Finished` or `Failed`). Inside, each *step* is:

1. prefill: up to ``prefill_chunk`` prompt tokens in all, from the requests still reading their prompts, oldest first,
   each its next chunk in a run of its own (batch size 1), and the oldest's always; a request whose prompt is read
   draws its first token and starts decoding;
2. decode: one token for every row that is decoding, in one run (with runtime LoRA adapters, one run per adapter
   among the decoding rows: `slmdeploy.serve.decoder`).

So a step costs one decode run for the whole batch plus at most one chunk's worth of prompt tokens: decoding rows
are never stalled for longer than one chunk by newcomers' prompts, and a newcomer starts reading its prompt at the
first step after it arrives, several short prompts in the same step (llama-server with ``-cb`` also fills each batch
with every slot's next token first, then prompt tokens).
A request waits only while every row is taken. A row is freed the moment its request ends, is cancelled (the client
left, or its time ran out) or the server shuts down; the next waiting request takes it at the next step.
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
    answer: list[int] = attrs.field(factory=list)

    @property
    def decoding(self) -> bool:
        return self.read == len(self.job.ids)


class EngineWorker:
    """The thread that owns a model's decoder: start it, `submit` jobs, `cancel` them, `stop` it."""

    def __init__(self, loaded: LoadedModel, max_batch: int, drawn: Any = None) -> None:
        """`drawn`: a counter (``inc()``) of the tokens drawn, every row's, as they are drawn."""
        self.loaded = loaded
        self.drawn = drawn
        self.max_batch = max_batch
        self.commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"engine {loaded.spec.name}", daemon=True)
        self.rows: list[Row | None] = [None] * max_batch
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
        """Waiting requests take the lowest free rows (decode runs over rows 0..n-1, so low rows keep n small)."""
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
            self.rows[self.rows.index(None)] = Row(job, sampler, text, grammar)

    def _step(self) -> None:
        out: list[tuple[Job, Event]] = []
        reading = sorted((row for row in self.rows if row is not None and not row.decoding), key=_arrival)
        budget = self.loaded.prefill_chunk or sum(len(row.job.ids) for row in reading)
        for row in reading:  # the oldest first, each its next chunk, while the step's budget holds it (one at least)
            size = self._chunk_size(row)
            if size > budget and row is not reading[0]:
                break
            budget -= size
            self._prefill(row, size, out)
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
        lengths = [(row.length if row.decoding else row.read) if row is not None else 0 for row in rows]
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
        for index, row in enumerate(self.rows):
            if row is not None and row.job is job:
                self.rows[index] = None

    def _fail_all(self, message: str, status: int) -> None:
        jobs = [*(row.job for row in self.rows if row is not None), *self.waiting]
        self.rows = [None] * self.max_batch
        self.waiting.clear()
        _post([(job, Failed(message, status)) for job in jobs])


def _arrival(row: Row) -> int:
    return row.job.sequence


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
