"""The public API for plugin authors: everything a plugin imports from slmdeploy is here.

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

A project can also keep unpackaged plugins in a ``slmdeploy_plugins.py`` beside its ``slmdeploy.toml``.
The hooks are documented in `slmdeploy.hookspecs`; ``docs/plugins.md`` is the guide (every hook, the template
family class and its attributes, the pytest plugin's fixtures), and ``examples/`` holds two tested plugins.
"""

from __future__ import annotations

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
    chat_template,
    model_config,
)
from slmdeploy.candidates import Candidate, QuantizeSearch
from slmdeploy.config.project import Project
from slmdeploy.config.project_options import ProjectOptions
from slmdeploy.config.syntax import read_text_file
from slmdeploy.deploy.reports import format_figure
from slmdeploy.deployed import ChatBackend, DeployedModel
from slmdeploy.errors import ConfigError, GateFailed, InputError, StageError, WorkerTimeout
from slmdeploy.execute.worker import run_in_worker
from slmdeploy.files import link_tree
from slmdeploy.machine import available_cores, resolve_threads
from slmdeploy.model.fidelity import add_sums, fidelity_figures, fidelity_sums, genai_logits
from slmdeploy.model.runtime import ALL_LOGITS_GRAPH, load_genai_model, session_options
from slmdeploy.model.sources import prepare_source
from slmdeploy.model.template_parity import PARITY_CONVERSATIONS
from slmdeploy.model.templating import ChatTemplateFamily, FamilyOptions, PromptTemplate
from slmdeploy.model.tokenizer import TokenizerFiles, render_chat_template
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
    "ALL_LOGITS_GRAPH",
    "PARITY_CONVERSATIONS",
    "Artifact",
    "Candidate",
    "ChatBackend",
    "ChatTemplateFamily",
    "ConfigError",
    "Converter",
    "DeployPackage",
    "DeployedModel",
    "EvaluationReport",
    "Evaluator",
    "FamilyOptions",
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
    "PromptTemplate",
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
    "TokenizerFiles",
    "WorkerTimeout",
    "add_sums",
    "available_cores",
    "chat_template",
    "fidelity_figures",
    "fidelity_sums",
    "format_figure",
    "genai_logits",
    "hookimpl",
    "link_tree",
    "load_genai_model",
    "model_config",
    "option",
    "prepare_source",
    "read_text_file",
    "render_chat_template",
    "resolve_threads",
    "run_in_worker",
    "session_options",
]
