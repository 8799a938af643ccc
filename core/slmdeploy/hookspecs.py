"""Every hook a slmdeploy plugin can implement. This module is the plugin author's reference.

Stage hooks are *registration* hooks: each returns stage implementation classes (subclasses of the
stage bases in `slmdeploy.plugin`), and ``slmdeploy.toml`` selects one of them by its `PLUGIN_NAME`::

    [quantize]
    plugin = "olive"      # the PLUGIN_NAME of a Quantizer some plugin registered
    precision = "int4"    # a key of that class's Options

All registration hooks are *collecting*: every plugin's answer is gathered, and two classes with the same
`PLUGIN_NAME` for one stage are an error naming both plugins, unless one is shipped with slmdeploy: an installed
third-party class then shadows it, and `slmdeploy plugins` and `slmdeploy plan` say so.

``docs/plugins/hooks.md`` gives each hook a section: when it is called, its arguments, an example, and the shipped
plugin that implements it (a test keeps the two in step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from slmdeploy.artifacts import ModelInfo
    from slmdeploy.candidates import Candidate, QuantizeSearch
    from slmdeploy.config.project import Project
    from slmdeploy.config.project_options import ProjectOptions
    from slmdeploy.deployed import ChatBackend, DeployedModel
    from slmdeploy.stages import Converter, Evaluator, Quantizer, Registrar, TemplateFamily

PROJECT_NAME = "slmdeploy"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def slmdeploy_register_converters() -> Sequence[type[Converter]]:
    """Return the `Converter` classes this plugin provides (collecting).

    A converter turns the ``[source]`` model (a `SourceModel`: Hugging Face folder or GGUF file, optional
    LoRA adapter) into an `OnnxModel` folder. Selected by ``[convert] plugin``.
    """


@hookspec
def slmdeploy_register_quantizers() -> Sequence[type[Quantizer]]:
    """Return the `Quantizer` classes this plugin provides (collecting).

    A quantizer turns an `OnnxModel` into a `QuantizedModel`. Selected by ``[quantize] plugin``. An
    option declared with ``option(..., variants=True)`` may be given as a list in the project file; each
    value builds its own variant, all sharing the cached conversion.
    """


@hookspec(firstresult=True)
def slmdeploy_quantize_candidates(
    quantizer: str, table: Mapping[str, Any], search: QuantizeSearch
) -> Sequence[Candidate] | None:
    """Return the candidate settings a ``[quantize] search`` tries with the quantizer named `quantizer`, cheapest
    first; or None when that quantizer is not this plugin's (firstresult).

    `table` is the project's ``[quantize]`` table without ``plugin`` and ``search``; `search` holds the targets
    (``min_top1``, ``max_size_mb``) and ``prefer`` (``decode`` or ``size``). Each `Candidate` has a `name` (its
    variant's name, unique, e.g. ``int4-kquant``), `options` (keys of the quantizer's Options that override the
    table's) and a one-line `note` that ``slmdeploy plan`` shows. Every candidate becomes a variant: its options are
    validated and checked (`Stage.check`) like the table's, it is built and evaluated as any variant is (cached, so a
    second search reuses it), and the core deploys the one that meets the targets and is best by ``prefer``::

        @hookimpl
        def slmdeploy_quantize_candidates(quantizer, table, search):
            if quantizer != "copy":
                return None
            return [Candidate("int4", {"precision": "int4"}), Candidate("int8", {"precision": "int8"}, "2x the size")]
    """


@hookspec
def slmdeploy_register_templates() -> Sequence[type[TemplateFamily]]:
    """Return the `TemplateFamily` classes this plugin provides (collecting).

    A template family turns a model folder into a `DeployPackage`: ``inference_model.json``, chat
    template and stop tokens. Selected by ``[template] family``, or by `slmdeploy_template_family` when
    that is ``"auto"``. Subclass `slmdeploy.plugin.templates.ChatTemplateFamily` and set its attributes
    (``TURN``, ``ROLES``, ``GENERATION_PROMPT``, ``BOS_TEXT``, ``END_TOKENS``, ``OPTIONAL_END_TOKENS``,
    ``SYSTEM_ROLE``); its methods receive the model (`ModelInfo`, with its ``chat_template``).
    ``docs/plugins/templates.md`` documents every attribute and method with a complete example.
    """


@hookspec(firstresult=True)
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    """Return the `PLUGIN_NAME` of the template family that handles `model`, or None (firstresult).

    Called when ``[template] family = "auto"``, with the model's config (`model.model_type`,
    `model.architectures`) and its tokenizer's `model.chat_template`. The first non-None answer wins;
    mark a catch-all implementation ``@hookimpl(trylast=True)``. When nobody answers, the built-in
    fallback raises an error listing the installed families.
    """


@hookspec
def slmdeploy_register_evaluators() -> Sequence[type[Evaluator]]:
    """Return the `Evaluator` classes this plugin provides (collecting).

    An evaluator measures a `DeployPackage` and returns an `EvaluationReport`; a report with
    ``passed=False`` stops the variant before registration. Selected by ``[evaluate] plugins`` (a list);
    each evaluator's options live in ``[evaluate.<PLUGIN_NAME>]``.
    """


@hookspec
def slmdeploy_register_registrars() -> Sequence[type[Registrar]]:
    """Return the `Registrar` classes this plugin provides (collecting).

    A registrar puts a `DeployPackage` where a runtime finds it and returns a `Registration`.
    Selected by ``[register] plugin``.
    """


@hookspec
def slmdeploy_check_project(project: Project, options: ProjectOptions) -> None:
    """Check the whole project file before any stage runs (collecting); raise `ConfigError`.

    For rules that span tables, such as a precision that the ``[convert]`` device cannot run. A single
    stage's own options are better checked in its `check` method.

    `options` is the project file already checked, typed (`ProjectOptions`): ``options.sources`` the models
    variants start from (each a `SourceModel` whose ``path`` exists, with its ``adapter`` folder), ``options.stages``
    each stage table's selected ``name`` and its other keys (``options``; ``options.table("register")`` finds one
    by its key, ``evaluate.quality`` for an evaluator's), ``options.search``, ``options.gates``,
    ``options.fallback``; every stage implementation the tables select is installed. `project` is the file as
    loaded (its core tables; ``project.locate("quantize.precision")`` for an error at that key's line). Take
    either or both: a hook implementation names only the arguments it uses::

        @hookimpl
        def slmdeploy_check_project(options):
            for source in options.sources:
                if source.model.format == "gguf" and source.model.adapter is not None:
                    raise ConfigError("...", where=options.project.locate("source.adapter"), fix="...")

    Implementations written before `options` was passed, taking only `project`, keep working.
    """


@hookspec(firstresult=True)
def slmdeploy_chat_backend(model: DeployedModel, threads: int) -> ChatBackend | None:
    """Return a `ChatBackend` that runs `model` with `threads` intra-op threads, or None (firstresult).

    Used by ``slmdeploy run``. A registrar's plugin answers for the models it registered
    (``model.registration["registry"]``) when its runtime is installed; a plugin that can run any model folder
    directly marks its implementation ``@hookimpl(trylast=True)``.
    """


@hookspec
def slmdeploy_write_report(build_dir: Path, reports: Sequence[Mapping[str, Any]]) -> None:
    """Write what a person reads about the evaluated variants (collecting): tables, plots.

    Called after a build that changed ``build/``, once for all variants that were evaluated. Each item of
    `reports` is a variant's ``build/<variant>/report.json`` (``variant``, ``status``, ``metrics``, ``gates``,
    ``evaluators``: each evaluator's summary, ``registered``) plus ``folder``, the variant's folder.
    Write into those folders only, each file to a temporary name first and then moved into place.
    """
