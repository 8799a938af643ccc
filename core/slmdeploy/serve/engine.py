"""One onnxruntime-genai ``Engine`` per served model, stepped by a thread of its own.

The runtime's Engine batches the requests it holds: each ``Engine.run`` decodes one token for every request in the
batch, each with its own turn options (sampling, token cap, guidance). Its objects are not thread-safe, so only the
engine thread touches them: the event loop hands it `Job`s and cancellations through a queue, and it hands back
`Delta`, `Finished` and `Failed` events through ``loop.call_soon_threadsafe``, one call per step.

What 0.18 does on CPU (measured; see the README's "Serve" section): without a PagedAttention model (which its
builder makes only for CUDA and WebGPU fp16) the Engine batches *statically*: requests that arrive while a batch runs
wait until every request of it has finished, then start together. Per-turn seeds and stop strings need dynamic
batching, so stop strings are matched here (`text`), and a request with a seed runs beside the batch through its
own ``Generator``, which takes a seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Any

import attrs

from slmdeploy.serve.models import LoadedModel
from slmdeploy.serve.text import TokenText

TOKEN, TURN_FINISHED, FAILED = 1, 2, 8  # og.EngineEventFlags, as bits
IDLE_WAIT_S = 0.5


@attrs.frozen
class Sampling:
    """A request's turn settings; None: the package's own (its ``search`` options)."""

    max_new: int
    min_new: int = 0
    """Tokens before the end-of-sequence token may end the answer (vLLM's ``min_tokens``)."""
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stops: tuple[str, ...] = ()
    guidance: tuple[str, str] | None = None
    """(kind, text): ``json_schema`` with the schema as JSON text, or ``lark_grammar`` with a llguidance grammar (a
    tool call's shape); the answer is constrained to it."""
    top_k: int | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once per time it was generated."""
    presence_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once if it was generated at all."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to the logits before sampling."""
    logprobs: int | None = None
    """None: no log-probabilities; 0: the chosen token's; k: and the k likeliest alternatives (``top_logprobs``)."""


@attrs.frozen
class TokenLogprob:
    """One generated token's log-probability, and the likeliest alternatives' (OpenAI's ``logprobs.content``)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@attrs.frozen
class Delta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens behind `text`, when the request asked for ``logprobs``."""


@attrs.frozen
class Finished:
    reason: str
    """``stop`` or ``length``, as OpenAI names them."""
    prompt_tokens: int
    completion_tokens: int


@attrs.frozen
class Failed:
    message: str
    status: int = 500


Event = Delta | Finished | Failed
FINISH_REASONS = {
    "EOS": "stop",
    "STOP_STRING": "stop",
    "MAX_GENERATED_TOKENS": "length",
    "MAX_SESSION_TOKENS": "length",
}


@attrs.define(eq=False)
class Job:
    """One chat completion: asked for on the event loop, answered by the engine thread through `events`."""

    ids: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = attrs.field(factory=asyncio.Queue)
    # the engine thread's side
    text: TokenText | None = None
    request: Any = None
    turn: int = 0
    generator: Any = None
    generated: int = 0


class EngineWorker:
    """The thread that owns a model's Engine: start it, `submit` jobs, `cancel` them, `stop` it."""

    def __init__(self, loaded: LoadedModel, max_batch: int) -> None:
        self.loaded = loaded
        self.max_batch = max_batch
        self.commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"engine {loaded.spec.name}", daemon=True)
        self.batch: dict[Any, Job] = {}
        self.seeded: list[Job] = []

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
        import onnxruntime_genai as og

        self.og = og
        self.engine = og.Engine(self.loaded.model)
        self.buffer = self.engine.create_event_buffer(4 * self.max_batch)
        try:
            while self._take_commands(wait=not self.batch and not self.seeded):
                if self.batch:
                    self._step_batch()
                for job in list(self.seeded):
                    self._step_seeded(job)
        except Exception as error:  # noqa: BLE001 - the runtime failed: every client hears why, nothing hangs
            self._fail_all(f"the runtime failed: {error}", 500)
        finally:
            del self.engine

    def _take_commands(self, wait: bool) -> bool:
        try:
            commands = [self.commands.get(timeout=IDLE_WAIT_S)] if wait else []
        except queue.Empty:
            return True
        while not self.commands.empty():
            commands.append(self.commands.get_nowait())
        for verb, argument in commands:
            if verb == "stop":
                self._fail_all(argument, 503, pending=[job for verb, job in commands if verb == "start"])
                return False
            (self._begin if verb == "start" else self._cancel)(argument)
        return True

    def _begin(self, job: Job) -> None:
        job.text = TokenText(self.loaded.tokenizer, self.loaded.eos, job.sampling.stops)
        try:
            if job.sampling.seed is not None and job.sampling.temperature != 0:
                self._begin_seeded(job)
            else:
                self._begin_in_batch(job)
        except RuntimeError as error:  # the runtime refused this request (a schema guidance cannot compile)
            _post([(job, Failed(f"the runtime refused the request: {error}", 400))])

    def _begin_in_batch(self, job: Job) -> None:
        og, sampling, defaults = self.og, job.sampling, self.loaded.defaults
        request = self.engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(sampling.max_new)
        if sampling.min_new:
            options.set_min_generated_tokens(sampling.min_new)
        temperature = defaults.get("temperature", 1.0) if sampling.temperature is None else sampling.temperature
        sample = bool(defaults.get("do_sample", True)) and temperature > 0
        options.set_do_sample(sample)
        if sample:
            options.set_temperature(temperature)
            options.set_top_p(defaults.get("top_p", 1.0) if sampling.top_p is None else sampling.top_p)
            options.set_top_k(int(defaults.get("top_k", 0)))
        if "repetition_penalty" in defaults:
            options.set_repetition_penalty(float(defaults["repetition_penalty"]))
        if sampling.guidance:
            options.set_guidance(*sampling.guidance)
        job.turn = request.begin_turn(_int32(job.ids), options)
        job.request = request
        self.batch[request] = job

    def _begin_seeded(self, job: Job) -> None:
        sampling, defaults = job.sampling, self.loaded.defaults
        params = self.og.GeneratorParams(self.loaded.model)
        params.set_search_options(
            do_sample=True,
            temperature=defaults.get("temperature", 1.0) if sampling.temperature is None else sampling.temperature,
            top_p=defaults.get("top_p", 1.0) if sampling.top_p is None else sampling.top_p,
            top_k=int(defaults.get("top_k", 0)),
            repetition_penalty=float(defaults.get("repetition_penalty", 1.0)),
            random_seed=sampling.seed,
            max_length=len(job.ids) + sampling.max_new,
            min_length=len(job.ids) + sampling.min_new if sampling.min_new else 0,
        )
        if sampling.guidance:
            params.set_guidance(*sampling.guidance)
        job.generator = self.og.Generator(self.loaded.model, params)
        job.generator.append_tokens(_int32(job.ids))
        self.seeded.append(job)

    def _step_batch(self) -> None:
        out: list[tuple[Job, Event]] = []
        for event in self.engine.run(self.buffer):
            job = self.batch.get(event.request)
            if job is None:
                continue
            flags = int(event.flags)
            if flags & TOKEN:
                self._token(job, int(event.token), out)
            if flags & FAILED:
                out.append((job, Failed(f"the runtime failed on this request ({event.error_code.name})")))
                self._close(job)
            elif flags & TURN_FINISHED:
                reason = FINISH_REASONS.get(event.finish_reason.name, "stop")
                self._finish(job, reason, int(event.usage.prompt_tokens), out)
        _post(out)

    def _step_seeded(self, job: Job) -> None:
        out: list[tuple[Job, Event]] = []
        job.generator.generate_next_token()
        token = int(job.generator.get_next_tokens()[0])
        self._token(job, token, out)
        assert job.text is not None
        if token in self.loaded.eos or job.text.stopped:
            self._finish(job, "stop", len(job.ids), out)
        elif job.generator.is_done():
            self._finish(job, "length", len(job.ids), out)
        _post(out)

    def _token(self, job: Job, token: int, out: list[tuple[Job, Event]]) -> None:
        assert job.text is not None
        if job.text.stopped:
            return
        if token not in self.loaded.eos:
            job.generated += 1
        if text := job.text.feed(token):
            out.append((job, Delta(text)))
        if job.text.stopped and job.request is not None:
            job.request.cancel_turn(job.turn)

    def _finish(self, job: Job, reason: str, prompt_tokens: int, out: list[tuple[Job, Event]]) -> None:
        assert job.text is not None
        if rest := job.text.stop.flush():
            out.append((job, Delta(rest)))
        out.append((job, Finished(reason, prompt_tokens, job.generated)))
        self._close(job)

    def _cancel(self, job: Job) -> None:
        if job.request is not None and job.request in self.batch:
            job.request.cancel_turn(job.turn)  # its CANCELLED event closes it on the next step
        elif job in self.seeded:
            self._close(job)

    def _close(self, job: Job) -> None:
        if job.request is not None:
            self.batch.pop(job.request, None)
            job.request.close()
            job.request = None
        if job in self.seeded:
            self.seeded.remove(job)
            job.generator = None

    def _fail_all(self, message: str, status: int, pending: list[Job] | None = None) -> None:
        jobs = [*self.batch.values(), *self.seeded, *(pending or [])]
        for job in list(self.batch.values()):
            with contextlib.suppress(RuntimeError):  # a failed engine may refuse this too
                job.request.cancel_turn(job.turn)
                self._close(job)
        self.seeded.clear()
        for job in jobs:
            _post([(job, Failed(message, status))])


def _post(out: list[tuple[Job, Event]]) -> None:
    """Hand a step's events to the event loop in one call (a closed loop has no one left to tell)."""
    if not out:
        return

    def deliver() -> None:
        for job, event in out:
            job.events.put_nowait(event)

    with contextlib.suppress(RuntimeError):
        out[0][0].loop.call_soon_threadsafe(deliver)


def _int32(ids: list[int]) -> Any:
    import numpy as np

    return np.asarray(ids, dtype=np.int32)
