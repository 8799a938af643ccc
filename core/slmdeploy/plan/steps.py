"""A plan: the variants a project builds, each a chain of steps, and what each step's output key covers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from slmdeploy.artifacts import SourceModel
from slmdeploy.candidates import QuantizeSearch
from slmdeploy.config.gates import Gate
from slmdeploy.config.options import unstructure
from slmdeploy.config.project import CORE_TABLES, Project
from slmdeploy.config.project_options import AUTO
from slmdeploy.host.registry import Provided
from slmdeploy.plan.digests import sha256_text, stable_json
from slmdeploy.stages import Metric


@attrs.frozen
class Step:
    """One stage of one variant: which implementation runs, with which validated options."""

    stage: str
    table: str
    """The key path of the step's table: ``quantize`` or ``evaluate.benchmark``."""
    provided: Provided | None
    """None for a template step with ``family = "auto"``, resolved when its input exists."""
    options: Any
    raw: Mapping[str, Any]
    path_digests: Mapping[str, str]
    label: str = ""
    """A search candidate's name, which names its variant; empty for other steps."""
    note: str = ""
    """What a search candidate changes, for ``slmdeploy plan``."""

    @property
    def plugin_name(self) -> str:
        return self.provided.cls.PLUGIN_NAME if self.provided else AUTO

    def key(self, input_digest: str, context_tables: Mapping[str, Any], variant: str, adapter: str = "") -> str:
        """The content address of this step's output; `adapter`: the runtime adapter an evaluator applies."""
        assert self.provided is not None
        cls = self.provided.cls
        return sha256_text(
            stable_json(
                {
                    **({"adapter": adapter} if adapter else {}),
                    "stage": self.stage,
                    "plugin": cls.PLUGIN_NAME,
                    "class": f"{cls.__module__}.{cls.__qualname__}",
                    "version": self.provided.version,
                    "cache_version": cls.cache_version(),
                    "variant": variant if cls.VARIANT_IN_KEY else None,
                    "options": unstructure(self.options),
                    "files": dict(self.path_digests),
                    "context": {name: context_tables[name] for name in cls.CONTEXT_TABLES},
                    "input": input_digest,
                }
            )
        )


@attrs.frozen
class Variant:
    name: str
    steps: tuple[Step, ...]
    source: SourceModel
    """The model its first step reads: ``[source]``, with this variant's LoRA adapter when there are several."""
    source_digest: str
    adapter: str = ""
    """For a runtime LoRA adapter's variant (``[convert] adapters = "runtime"``), ``<adapter>-<base>``: the adapter's
    name. It shares every step up to its evaluators with its base variant (same keys, made once); its evaluators run
    the base's package with ``adapters/<adapter>.onnx_adapter`` active, against `reference`."""
    base: str = ""
    """The base variant an adapter's variant shares its files with."""
    reference: SourceModel | None = None
    """What an adapter's variant is compared against: the base with this adapter merged (`SourceModel.adapter`)."""
    reference_digest: str = ""

    def evaluated_source(self) -> tuple[SourceModel, str]:
        """The source its evaluators compare against, and that source's digest."""
        if self.reference is not None:
            return self.reference, self.reference_digest
        return self.source, self.source_digest


@attrs.frozen
class Plan:
    project: Project
    source: SourceModel
    source_digest: str
    variants: tuple[Variant, ...]
    gates: tuple[Gate, ...] = ()
    metrics: Mapping[str, Metric] = attrs.field(factory=dict)
    """What the variants' evaluators measure, by name."""
    fallback: tuple[str, ...] = ()
    """Variant names in order of preference: each is built only when the one before it failed a gate."""
    axes: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    """The matrix the variants make: each axis (``adapter``, ``precision``) with its values."""
    search: QuantizeSearch | None = None
    """``[quantize] search``: the variants are its candidates, cheapest first, and one of them is deployed."""

    def context_tables(self) -> dict[str, Any]:
        return {name: self.project.core_table(name) for name in CORE_TABLES}
