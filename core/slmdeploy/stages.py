"""Stage implementation classes: what a plugin returns from its registration hook.

A stage implementation is a small class with a `PLUGIN_NAME` (its name in ``slmdeploy.toml``), an
`Options` attrs class describing its table, and a `run` method turning the previous stage's artifact into
its own. One base class per stage fixes the artifact types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from slmdeploy.artifacts import (
    Artifact,
    DeployPackage,
    EvaluationReport,
    OnnxModel,
    QuantizedModel,
    Registration,
    SourceModel,
    adapter_file,
)


@attrs.frozen
class Metric:
    """A figure an evaluator measures, which ``[evaluate.gates]`` can bound."""

    description: str
    unit: str = ""
    higher_is_better: bool = True
    depends_on_machine: bool = False
    """An absolute figure (milliseconds, tokens/s) that another machine measures differently: a gate on it holds
    only on known hardware, so its failure says so. Ratios measured in the same run do not depend on it."""
    adapter_only: bool = False
    """Measured only for a runtime adapter's variant (``[convert] adapters = "runtime"``), such as the adapter's cost
    against its base alone: a gate on it judges those variants and leaves the base variants alone."""


STAGE_ORDER = ("convert", "quantize", "template", "evaluate", "register")
"""The order stages run in. Evaluation runs before registration so that a failed gate deploys nothing."""


def option(
    default: Any = attrs.NOTHING,
    *,
    help: str,  # noqa: A002 - the word users know from argparse and click
    variants: bool = False,
    path: bool = False,
    validator: Callable[..., Any] | None = None,
) -> Any:
    """Declare one key of a stage's table.

    `help` documents the key (shown by ``slmdeploy plugins --options`` and in error messages).
    `variants=True` lets the user give a list: each value builds its own variant (``precision =
    ["int4", "int8"]``). `path=True` marks a file or folder path, resolved against the project folder;
    the content's digest is part of the stage's cache key, so editing the file re-runs the stage.
    """
    metadata = {"help": help, "variants": variants, "path": path}
    if isinstance(default, (list, dict, set)):
        return attrs.field(factory=lambda: type(default)(default), metadata=metadata, validator=validator)
    return attrs.field(default=default, metadata=metadata, validator=validator)


@attrs.frozen
class Needs:
    """What one step of a stage needs of the machine that runs it. The local executor runs steps side by side
    only while their `memory` fits in free memory; a cluster executor asks its scheduler for all of it."""

    cpus: float = 1.0
    memory: int = 0
    """Bytes of memory the step may use at its peak."""
    gpus: float = 0.0
    """1 for work that runs only on a GPU: a cluster places the step on a node that has one."""


@attrs.define
class NoOptions:
    """Options of a stage whose table takes no keys besides the plugin selector."""


@attrs.define
class StageContext:
    """What a running stage may know besides its own table."""

    project_dir: Path
    project_name: str
    project_version: int
    variant: str
    tables: dict[str, Any]
    """The core tables a stage asked for in `CONTEXT_TABLES` (for example ``generation``)."""
    log: Callable[[str], None]
    """Report progress; shown under the stage's spinner or as a plain line."""
    scratch: Path
    """An empty folder for intermediate files, on the same file system as the output; removed afterwards."""
    logs_dir: Path
    """A folder for logs that outlive the stage, so a failed stage's full log can be read afterwards."""
    source: SourceModel | None = None
    """The project's ``[source]`` model, for stages that compare against it (evaluators)."""
    source_digest: str = ""
    """The content digest of `source` (and its adapter)."""
    adapter: str | None = None
    """For an evaluator of a runtime LoRA adapter's variant (``[convert] adapters = "runtime"``): the adapter's name.
    The package's ``adapters/<adapter>.onnx_adapter`` is to be applied to every generation (`adapter_file`), and
    `source` is the base with that adapter merged."""
    shared: Callable[[str, Mapping[str, Any], Callable[[Path], None]], Path] | None = None
    """``shared(name, key, make)``: a cached folder for work several variants and builds can reuse (a
    dequantized source, its reference measurements). The first caller runs ``make(folder)``; later calls with
    the same name and JSON-friendly key return the committed folder. None outside a build."""

    def adapter_file(self, model_folder: Path) -> Path | None:
        """The runtime adapter file to apply in `model_folder` (a package's model folder): None but for an
        adapter's variant."""
        return adapter_file(model_folder, self.adapter) if self.adapter else None


class Stage:
    """Base of all stage implementations. Subclass one of the five stage bases below, not this."""

    STAGE: ClassVar[str]
    PLUGIN_NAME: ClassVar[str]
    INPUT: ClassVar[type[Artifact]]
    OUTPUT: ClassVar[type[Artifact]]
    Options: ClassVar[type] = NoOptions
    CONTEXT_TABLES: ClassVar[tuple[str, ...]] = ()
    """Core tables of the project file this stage reads; they become part of its cache key."""
    CACHE_VERSION: ClassVar[str] = "1"
    """Bump to invalidate cached outputs when the plugin's output changes but its version does not."""
    RUNS_ALONE: ClassVar[bool] = False
    """True for a stage that measures speed or memory: it never runs side by side with another step."""
    VARIANT_IN_KEY: ClassVar[bool] = False
    """True when the output depends on the variant's name (a package named after it): part of the key then."""

    def __init__(self, options: Any, context: StageContext) -> None:
        self.options = options
        self.context = context

    @classmethod
    def cache_version(cls) -> str:
        """`CACHE_VERSION`, plus whatever else invalidates cached outputs (the versions of the libraries a
        stage runs, say): part of every key."""
        return cls.CACHE_VERSION

    @classmethod
    def check(cls, options: Any) -> None:
        """Validate the options while the build is planned, before any stage runs; raise `ConfigError`.

        Cheap: no model loading. Rules that involve other tables belong in `slmdeploy_check_project`."""

    def run(self, artifact: Any, output_dir: Path) -> Artifact:
        """Produce this stage's artifact from the previous stage's, writing files only under
        `output_dir` (an empty temporary folder, moved into the cache when `run` returns)."""
        raise NotImplementedError

    def is_current(self, artifact: Any) -> bool:
        """Whether a cached output is still valid outside the cache (a registration still present)."""
        return True

    @classmethod
    def needs(cls, options: Any, input_bytes: int) -> Needs:
        """What one step needs, from its options and the size of its input in bytes. By default one CPU and
        three times the input's size in memory (conversion and quantization hold their input, their output,
        and working copies); override for a stage that needs a GPU or more cores."""
        return Needs(cpus=1.0, memory=3 * input_bytes)


class Converter(Stage):
    """``[convert]``: a Hugging Face model (folder, GGUF, LoRA adapter) to an ONNX model folder."""

    STAGE = "convert"
    INPUT = SourceModel
    OUTPUT = OnnxModel
    RUNTIME_ADAPTERS: ClassVar[bool] = False
    """True for a converter that honours ``SourceModel.adapters`` (``[convert] adapters = "runtime"``): it writes
    the base once and each adapter as ``adapters/<name>.onnx_adapter`` in its output, with ``adapters.json``
    (`slmdeploy.artifacts.ADAPTERS_INDEX`) naming them; a plan asking for runtime adapters from any other is refused."""


class Quantizer(Stage):
    """``[quantize]``: an ONNX model folder to a quantized one."""

    STAGE = "quantize"
    INPUT = OnnxModel
    OUTPUT = QuantizedModel


class TemplateFamily(Stage):
    """``[template]``: a model folder to a deployable package with chat template and stop tokens.

    Selected by ``[template] family``; with ``family = "auto"`` the `slmdeploy_template_family` hook
    picks one from the model's config and tokenizer."""

    STAGE = "template"
    INPUT = OnnxModel
    OUTPUT = DeployPackage
    CONTEXT_TABLES = ("project", "generation", "runtime")
    VARIANT_IN_KEY = True


class Evaluator(Stage):
    """``[evaluate]``: measure a package. The package itself goes on to registration unchanged.

    `run` returns an `EvaluationReport` whose ``summary["metrics"]`` holds the figures named in `METRICS`;
    ``[evaluate.gates]`` bounds them (``min_<name>``, ``max_<name>``), judged by the core after every evaluator
    of the variant ran."""

    STAGE = "evaluate"
    INPUT = DeployPackage
    OUTPUT = EvaluationReport
    METRICS: ClassVar[Mapping[str, Metric]] = {}


class Registrar(Stage):
    """``[register]``: put a package where a runtime finds it, and prove it runs there."""

    STAGE = "register"
    INPUT = DeployPackage
    OUTPUT = Registration
    CONTEXT_TABLES = ("project",)

    def unregister(self, artifact: Any) -> str:
        """Undo `run` for a `Registration` it made (``slmdeploy clean --registry``); return what was removed.
        Remove only what this registrar put there."""
        raise NotImplementedError

    def leftovers(self, recorded: Sequence[Registration]) -> Sequence[Leftover]:
        """What this registrar placed for this project that none of `recorded` (every registration the project's
        cache and build folder hold) accounts for: a package copied into place by a registration that was cut
        short (``kill -9``) before it finished. Read from files, without starting the runtime; ``slmdeploy ls``
        shows each one. By default: nothing."""
        return ()


@attrs.frozen
class Leftover:
    """A registrar's find for ``slmdeploy ls``: something placed for this project that no build recorded."""

    model_id: str
    path: Path
    state: str
    """What it is, in the user's words: ``copied into Foundry Local's cache, never registered``."""
    fix: str
    """What to do about it: ``Run `slmdeploy build` to register it again, or delete the folder.``"""


STAGE_BASES: dict[str, type[Stage]] = {
    base.STAGE: base for base in (Converter, Quantizer, TemplateFamily, Evaluator, Registrar)
}
