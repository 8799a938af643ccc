"""What running a plan yields: a step's result (its cache entry and artifact), a step to run (`Task`), and a
variant's result (its steps and ``build/`` folder, or the error that stopped it)."""

from __future__ import annotations

from pathlib import Path

import attrs

from slmdeploy.artifacts import Artifact
from slmdeploy.errors import SlmdeployError
from slmdeploy.execute.cache import Entry
from slmdeploy.plan.steps import Step, Variant


@attrs.define
class StepResult:
    step: Step
    key: str
    entry: Entry
    artifact: Artifact
    cached: bool


Outcome = StepResult | SlmdeployError
"""A step's outcome: its result, or the user-facing error that stopped it (and the variants that share it)."""


@attrs.frozen
class Task:
    """One distinct step of a level, for an executor to run: the variants in `label` share it."""

    key: str
    step: Step
    variant: Variant
    artifact: Artifact
    """The step's input."""
    digest: str
    """The content digest of `artifact`."""
    label: str
    """The names of the variants that share the step, for progress lines: ``int4, int8``."""
    input_entry: Path | None = None
    """The cache entry holding `artifact`; None when it is the variant's source model."""


@attrs.define
class VariantResult:
    """A variant's steps, and its ``build/`` folder; or, when it failed, the error that stopped it."""

    variant: Variant
    results: list[StepResult]
    folder: Path | None
    published: bool
    error: SlmdeployError | None = None
    skipped: bool = False
    """A fallback variant that was not needed: the one before it passed its gates."""
    fell_back_to: str | None = None
    """For a variant that failed its gates: the later variant of the fallback chain, or the candidate of a
    search, that passed them and was deployed instead."""
    chosen: bool = False
    """The candidate a search deployed."""

    @property
    def failed(self) -> bool:
        return self.error is not None and self.fell_back_to is None
