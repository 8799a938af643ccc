"""A pytest plugin for plugin authors (entry point ``pytest11``), loaded automatically with slmdeploy.

Fixtures:

``slmdeploy_project``
    Makes a project folder from a project file's text (and optionally a local plugins file) and runs
    the CLI in it::

        def test_builds(slmdeploy_project):
            project = slmdeploy_project(PROJECT_TOML)
            result = project.cli("build")
            assert result.exit_code == 0, result.output

``tiny_model``
    Factory: a tiny random-weight Hugging Face model folder (2 layers, hidden 64) of any architecture
    transformers knows, by its ``model_type``, made offline in about a second (needs torch and transformers).
    ``config=`` gives a config (a dict or a transformers config) instead; other keywords override config keys;
    ``chat_template=`` and ``special=`` (``{"bos", "eos", "pad", "extra"}`` tokens) set the tokenizer's::

        def test_converter(tiny_model, run_stage):
            folder = tiny_model("gemma2", sliding_window=128, chat_template=GEMMA2_TEMPLATE, special=GEMMA_TOKENS)
            other = tiny_model(config={"model_type": "granite", "num_hidden_layers": 1})

``tiny_onnx_model``
    Factory: an `OnnxModel` as the convert stage leaves it, for stages after it (a template family, a
    registrar). By default without weights: the tiny model's config and tokenizer files and the
    ``genai_config.json`` the onnxruntime-genai model builder writes for it (its ``config_only`` mode, seconds);
    ``convert=True`` converts it for real with the installed ``olive`` converter (10 to 30 s), for stages that
    run the model. Takes `tiny_model`'s arguments; made once per session for each::

        def test_my_family(tiny_onnx_model, run_stage):
            model = tiny_onnx_model("gemma2", chat_template=GEMMA2_TEMPLATE, special=GEMMA_TOKENS)
            package = run_stage(MyFamily, model)

``run_stage``
    Runs one stage class on an artifact, with its options validated from a dict as if they came from
    ``slmdeploy.toml``, and returns the artifact it made::

        def test_quantizer(run_stage, tmp_path):
            made = run_stage(MyQuantizer, OnnxModel(model_dir), {"precision": "int4"})
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from slmdeploy.artifacts import Artifact, OnnxModel, SourceModel
from slmdeploy.config.options import structure_table
from slmdeploy.execute.cache import Store
from slmdeploy.stages import Stage, StageContext


@attrs.define
class CliResult:
    exit_code: int
    output: str
    """stdout and stderr, interleaved as a user would see them."""
    stdout: str
    stderr: str


def run_slmdeploy(project: Path, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m slmdeploy -C PROJECT --plain ARGS`` in a child process, as a user would; capture its output."""
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "--plain", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, env=dict(env) if env else None)


@attrs.define
class ProjectFolder:
    """A project folder made by the `slmdeploy_project` fixture."""

    path: Path

    @property
    def file(self) -> Path:
        return self.path / "slmdeploy.toml"

    def run(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the CLI in a child process (for stages that start workers or need their own environment)."""
        return run_slmdeploy(self.path, *args, env=env)

    def cli(self, *args: str) -> CliResult:
        """Run ``slmdeploy -C <folder> --plain ARGS`` in-process and capture what it printed."""
        from click.testing import CliRunner

        from slmdeploy.cli import main

        runner = CliRunner()
        result = runner.invoke(_as_command(main), ["-C", str(self.path), "--plain", *args], catch_exceptions=False)
        return CliResult(result.exit_code, result.output, result.stdout, result.stderr)


def _as_command(main: Callable[[list[str]], None]) -> Any:
    import click

    @click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.pass_context
    def command(ctx: click.Context) -> None:
        main(list(ctx.args))

    return command


@pytest.fixture
def slmdeploy_project(tmp_path: Path) -> Callable[..., ProjectFolder]:
    """Factory: ``slmdeploy_project(toml_text, plugins=None, files={})`` makes a project folder."""

    def make(toml: str, plugins: str | None = None, files: Mapping[str, str] | None = None) -> ProjectFolder:
        folder = tmp_path / "project"
        folder.mkdir(exist_ok=True)
        (folder / "slmdeploy.toml").write_text(textwrap.dedent(toml), encoding="utf-8")
        if plugins is not None:
            (folder / "slmdeploy_plugins.py").write_text(textwrap.dedent(plugins), encoding="utf-8")
        for name, text in (files or {}).items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text), encoding="utf-8")
        return ProjectFolder(folder)

    return make


@pytest.fixture(scope="session")
def _tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[Any, ...], Path]:
    return {}


@pytest.fixture
def tiny_model(
    tmp_path_factory: pytest.TempPathFactory, _tiny_models: dict[tuple[Any, ...], Path]
) -> Callable[..., Path]:
    """Factory: ``tiny_model(architecture="llama", chat_template=..., special=..., **config)`` -> model folder.

    Models are made once per test session for each distinct set of arguments; do not modify them."""
    from slmdeploy.testing.models import make_tiny_model

    def make(architecture: str = "llama", **arguments: Any) -> Path:
        key = (architecture, *sorted((name, repr(value)) for name, value in arguments.items()))
        if key not in _tiny_models:
            folder = tmp_path_factory.mktemp(f"tiny-{architecture}")
            _tiny_models[key] = make_tiny_model(folder, architecture, **arguments)
        return _tiny_models[key]

    return make


@pytest.fixture
def tiny_onnx_model(
    tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory, _tiny_models: dict[tuple[Any, ...], Any]
) -> Callable[..., OnnxModel]:
    """Factory: ``tiny_onnx_model(architecture="llama", convert=False, **tiny_model_arguments)`` -> `OnnxModel`."""

    def make(architecture: str = "llama", convert: bool = False, **arguments: Any) -> OnnxModel:
        key = ("onnx", convert, architecture, *sorted((name, repr(value)) for name, value in arguments.items()))
        if key not in _tiny_models:
            source = tiny_model(architecture, **arguments)
            root = tmp_path_factory.mktemp(f"tiny-onnx-{architecture}")
            _tiny_models[key] = _converted(source, root) if convert else _genai_config_only(source, root / "model")
        made: OnnxModel = _tiny_models[key]
        return made

    return make


def _genai_config_only(source: Path, out: Path) -> OnnxModel:
    """The builder's ``config_only`` mode: genai_config.json and the tokenizer files, no graph or weights."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out)]
    command += ["-p", "fp32", "-e", "cpu", "-c", str(out.parent / "cache"), "--extra_options", "config_only=true"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode or not (out / "genai_config.json").is_file():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the model builder wrote no genai_config.json for {source}: {last[0]} (try convert=True)")
    for name in ("config.json", "generation_config.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    return OnnxModel(out, precision="fp32")


def _converted(source: Path, root: Path) -> OnnxModel:
    """Converted by the installed ``olive`` converter plugin, as ``[convert] plugin = "olive"`` would."""
    from slmdeploy.host.manager import get_plugin_manager
    from slmdeploy.host.registry import Registry

    provided = Registry(get_plugin_manager()).get("convert", "olive")
    if provided is None:
        raise RuntimeError('no "olive" converter is installed: pip install "slmdeploy[olive]"')
    made = run_stage_in(root, provided.cls, SourceModel(source))
    assert isinstance(made, OnnxModel)
    return made


def context_tables(cls: type[Stage], given: Mapping[str, Any]) -> dict[str, Any]:
    """The core tables `cls` reads (``CONTEXT_TABLES``), as a build would give them: their defaults (a project named
    ``test-model``), updated with the keys a test gives."""
    from slmdeploy.config.project import CORE_TABLES, stage_view

    tables = {}
    for name in cls.CONTEXT_TABLES:
        raw = {"name": "test-model", **given.get(name, {})} if name == "project" else dict(given.get(name, {}))
        table = structure_table(CORE_TABLES[name], raw, name, lambda key: f"<test> [{key}]")
        tables[name] = stage_view(table)
    return {**given, **tables}


@pytest.fixture
def run_stage(tmp_path: Path) -> Callable[..., Artifact]:
    """Factory: ``run_stage(StageClass, artifact, options={}, tables={}, source=None)`` runs one stage, returns its
    artifact. `source` is the `SourceModel` an evaluator compares against; shared entries live in the test's folder."""

    def run(
        cls: type[Stage],
        artifact: Artifact,
        options: Mapping[str, Any] | None = None,
        tables: Mapping[str, Any] | None = None,
        variant: str = "test",
        source: SourceModel | None = None,
    ) -> Artifact:
        return run_stage_in(tmp_path, cls, artifact, options, tables, variant, source)

    return run


def run_stage_in(
    root: Path,
    cls: type[Stage],
    artifact: Artifact,
    options: Mapping[str, Any] | None = None,
    tables: Mapping[str, Any] | None = None,
    variant: str = "test",
    source: SourceModel | None = None,
) -> Artifact:
    """Run one stage class on `artifact` in a new folder under `root`, as `run_stage` does."""
    structured = structure_table(cls.Options, dict(options or {}), cls.STAGE, lambda key: f"<test> {key}")
    cls.check(structured)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{cls.STAGE}-{cls.PLUGIN_NAME}-", dir=root))
    output_dir, scratch = run_dir / "out", run_dir / "scratch"
    output_dir.mkdir(parents=True)
    scratch.mkdir()
    context = StageContext(
        project_dir=root,
        project_name="test-model",
        project_version=1,
        variant=variant,
        tables=context_tables(cls, tables or {}),
        log=lambda message: None,
        scratch=scratch,
        logs_dir=run_dir / "logs",
        source=source,
        source_digest=Store(root / ".state").digests.tree_digest(source.path) if source else "",
        shared=Store(root / ".state").shared,
    )
    produced = cls(structured, context).run(artifact, output_dir)
    assert isinstance(produced, cls.OUTPUT), f"{cls.__name__}.run returned {produced!r}"
    shutil.rmtree(scratch)
    return produced
