"""The plugin contract: what every slmdeploy plugin imports. Nothing here runs at import time, and nothing of the
build engine is imported (a contract in ``nox -s imports`` keeps it so).

A complete plugin adding a quantizer, in a package ``slmdeploy_myquant``::

    from __future__ import annotations

    import shutil

    import attrs

    from slmdeploy.plugin import QuantizedModel, Quantizer, hookimpl, option


    @attrs.define
    class CopyOptions:
        precision: str = option("fp32", help="the precision to record", variants=True)


    class CopyQuantizer(Quantizer):
        PLUGIN_NAME = "copy"          # [quantize] plugin = "copy"
        Options = CopyOptions

        def run(self, artifact, output_dir):
            shutil.copytree(artifact.path, output_dir, dirs_exist_ok=True)
            return QuantizedModel(output_dir, precision=self.options.precision)


    @hookimpl
    def slmdeploy_register_quantizers():
        return [CopyQuantizer]

and its entry point, in the plugin's ``pyproject.toml``::

    [project.entry-points.slmdeploy]
    myquant = "slmdeploy_myquant"

This module holds the hook marker, the types the hooks take and return, the artifacts, the stage base classes and
the errors. Helpers live in modules of their own: `slmdeploy.plugin.genai` (open an onnxruntime-genai package and
generate), `slmdeploy.plugin.fidelity`, `slmdeploy.plugin.worker` (`run_in_worker`), `slmdeploy.plugin.templates`
(`ChatTemplateFamily`), `slmdeploy.plugin.files`, `slmdeploy.plugin.report`; tests use `slmdeploy.testing`. The
hooks are documented in `slmdeploy.hookspecs`, and every name in the plugin reference (``docs/plugins/``).
Names that used to be here and moved still import from here for one minor version, with a `DeprecationWarning`
naming their new home (`MOVED`).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pluggy

from slmdeploy.artifacts import (
    Artifact,
    DeployPackage,
    EvaluationReport,
    ModelInfo,
    OnnxModel,
    QuantizedModel,
    Registration,
    SourceModel,
)
from slmdeploy.candidates import Candidate, QuantizeSearch
from slmdeploy.config.project import Project
from slmdeploy.config.project_options import ProjectOptions
from slmdeploy.deployed import ChatBackend, DeployedModel
from slmdeploy.errors import ConfigError, GateFailed, InputError, StageError, WorkerTimeout
from slmdeploy.stages import (
    Converter,
    Evaluator,
    Leftover,
    Metric,
    Needs,
    NoOptions,
    Quantizer,
    Registrar,
    Stage,
    StageContext,
    TemplateFamily,
    option,
)

hookimpl = pluggy.HookimplMarker("slmdeploy")
"""Marks a plugin's hook implementations: ``@hookimpl``, ``@hookimpl(trylast=True)``."""

__all__ = [
    "Artifact",
    "Candidate",
    "ChatBackend",
    "ConfigError",
    "Converter",
    "DeployPackage",
    "DeployedModel",
    "EvaluationReport",
    "Evaluator",
    "GateFailed",
    "InputError",
    "Leftover",
    "Metric",
    "ModelInfo",
    "Needs",
    "NoOptions",
    "OnnxModel",
    "Project",
    "ProjectOptions",
    "QuantizeSearch",
    "QuantizedModel",
    "Quantizer",
    "Registrar",
    "Registration",
    "SourceModel",
    "Stage",
    "StageContext",
    "StageError",
    "TemplateFamily",
    "WorkerTimeout",
    "hookimpl",
    "option",
]

MOVED = {
    "ALL_LOGITS_GRAPH": "genai",
    "available_cores": "genai",
    "genai_logits": "genai",
    "load_genai_model": "genai",
    "resolve_threads": "genai",
    "session_options": "genai",
    "add_sums": "fidelity",
    "fidelity_figures": "fidelity",
    "fidelity_sums": "fidelity",
    "run_in_worker": "worker",
    "ChatTemplateFamily": "templates",
    "FamilyOptions": "templates",
    "PARITY_CONVERSATIONS": "templates",
    "PromptTemplate": "templates",
    "TokenizerFiles": "templates",
    "render_chat_template": "templates",
    "chat_template": "files",
    "link_tree": "files",
    "model_config": "files",
    "prepare_source": "files",
    "read_text_file": "files",
    "format_figure": "report",
}
"""Names slmdeploy 0.1 exported here, by the module of `slmdeploy.plugin` that holds them now. They still import from
here, with a `DeprecationWarning`, until slmdeploy 0.3."""


def __getattr__(name: str) -> Any:
    home = MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'slmdeploy.plugin' has no attribute {name!r}")
    warnings.warn(
        f"slmdeploy.plugin.{name} moved to slmdeploy.plugin.{home}.{name}; import it from there "
        "(the old name goes in slmdeploy 0.3)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"slmdeploy.plugin.{home}"), name)
