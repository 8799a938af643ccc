"""In-process fake stage plugins for the core's unit tests: real files, no ML libraries.

Copied into a test project as its local ``slmdeploy_plugins.py``, so they load exactly as a project's
own plugins would. Every run appends a line to ``runs.log`` in the project folder, so tests can see
which stages ran and which came from the cache.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import attrs

from slmdeploy.plugin import (
    Candidate,
    ConfigError,
    Converter,
    DeployPackage,
    EvaluationReport,
    Evaluator,
    InputError,
    Metric,
    OnnxModel,
    QuantizedModel,
    Quantizer,
    Registrar,
    Registration,
    StageError,
    TemplateFamily,
    hookimpl,
    option,
)
from slmdeploy.plugin.worker import run_in_worker

FAULTS = ("value", "enospc", "eacces", "interrupt")


def raise_fault(kind, folder):
    """Fail as a real stage might: a bug (with a huge payload), a full disk, a denied folder, Ctrl-C."""
    if kind == "value":
        raise ValueError("unexpected " + "x" * 100_000)
    if kind == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if kind == "eacces":
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder / "denied"))
    if kind == "interrupt":
        raise KeyboardInterrupt


def fault_in_worker(task, progress):
    raise_fault(task["fault"], Path(task["folder"]))


def _hook_fault(hook):
    """FAKE_FAULT=<hook>:<kind> makes that hook of this plugin fail."""
    wanted, _, kind = os.environ.get("FAKE_FAULT", "").partition(":")
    if wanted == hook:
        raise_fault(kind, Path.cwd())


def _log(stage, text):
    with (stage.context.project_dir / "runs.log").open("a", encoding="utf-8") as log:
        log.write(f"{stage.context.variant} {text}\n")


@attrs.define
class CopyOptions:
    device: Literal["cpu", "gpu"] = option("cpu", help="where the model runs")
    sleep: float = option(0.0, help="seconds to sleep, to test interrupted builds")
    hold_until: str = option("", help="a file to wait for (at most a minute) before finishing, to test locking")
    fail: bool = option(False, help="raise instead of converting")


class CopyConverter(Converter):
    PLUGIN_NAME = "copy"
    Options = CopyOptions

    def run(self, artifact, output_dir):
        _log(self, "convert")
        if self.options.fail:
            raise StageError("the fake converter was told to fail", fix="Set fail = false.")
        for name in ("config.json", "weights.bin", "tokenizer_config.json"):
            if (artifact.path / name).exists():
                shutil.copy(artifact.path / name, output_dir / name)
        (output_dir / "model.onnx").write_text("fake onnx", encoding="utf-8")
        if artifact.adapter is not None:  # "merged": the adapter's files go along
            shutil.copytree(artifact.adapter, output_dir / "adapter")
        deadline = time.monotonic() + (60.0 if self.options.hold_until else self.options.sleep)
        released = self.context.project_dir / self.options.hold_until if self.options.hold_until else None
        while time.monotonic() < deadline and not (released and released.exists()):
            (output_dir / "progress").write_text(str(time.monotonic()), encoding="utf-8")
            time.sleep(0.05)
        return OnnxModel(output_dir, precision="fp32", execution_provider=self.options.device)


@attrs.define
class FakeQuantOptions:
    precision: Literal["int4", "int8", "fp32"] = option("int4", help="weight precision", variants=True)
    block_size: int = option(
        32, help="weights per quantization block", validator=attrs.validators.in_([16, 32, 64, 128])
    )
    calibration: str | None = option(None, help="a calibration text file", path=True)
    tag: str | None = option(None, help="a free-form label; a list builds one variant per label", variants=True)
    fail_for: str | None = option(None, help="raise instead of quantizing to this precision")
    fault: str | None = option(None, help="fail as a real stage might: value, enospc, eacces or interrupt")
    fault_in_worker: bool = option(False, help="fail in a worker process (run_in_worker)")


class FakeQuantizer(Quantizer):
    PLUGIN_NAME = "fake"
    Options = FakeQuantOptions

    def run(self, artifact, output_dir):
        _log(self, f"quantize {self.options.precision}")
        if self.options.fail_for == self.options.precision:
            raise StageError(f"told to fail for {self.options.precision}")
        if self.options.fault:
            if self.options.fault_in_worker:
                environment = {"PYTHONPATH": str(self.context.project_dir)}
                task = {"fault": self.options.fault, "folder": str(output_dir)}
                run_in_worker("slmdeploy_plugins:fault_in_worker", task, self.context, "fault", environment)
            raise_fault(self.options.fault, output_dir)
        shutil.copytree(artifact.path, output_dir, dirs_exist_ok=True)
        (output_dir / "precision.txt").write_text(self.options.precision, encoding="utf-8")
        return QuantizedModel(output_dir, precision=self.options.precision)


@attrs.define
class FamOptions:
    system_prompt: str = option("", help="a default system prompt")


class FakeFamily(TemplateFamily):
    PLUGIN_NAME = "fakefam"
    Options = FamOptions

    def run(self, artifact, output_dir):
        _log(self, "template")
        shutil.copytree(artifact.path, output_dir, dirs_exist_ok=True)
        generation = self.context.tables["generation"]
        info = {
            "Name": self.context.tables["project"]["name"],
            "ModelConfig": generation,
            "system": self.options.system_prompt,
        }
        (output_dir / "inference_model.json").write_text(json.dumps(info), encoding="utf-8")
        return DeployPackage(
            output_dir,
            precision=artifact.precision,
            family=self.PLUGIN_NAME,
            model_name=f"{self.context.project_name}-{self.context.variant}",
        )


@attrs.define
class SizeOptions:
    max_bytes: int = option(1_000_000, help="the largest package that passes")


class SizeEvaluator(Evaluator):
    """Measures the package's size, and reads figures planted in the project's ``figures.json`` (by variant)."""

    PLUGIN_NAME = "size"
    Options = SizeOptions
    METRICS = {  # noqa: RUF012 - read only
        "package_bytes": Metric("size of the package", "bytes", higher_is_better=False),
        "agreement": Metric("planted agreement", ""),
    }

    def run(self, artifact, output_dir):
        _log(self, "evaluate")
        size = sum(path.stat().st_size for path in artifact.path.rglob("*") if path.is_file())
        passed = size <= self.options.max_bytes
        planted = self.context.project_dir / "figures.json"
        figures = json.loads(planted.read_text()).get(self.context.variant, {}) if planted.is_file() else {}
        metrics = {"package_bytes": size, **figures}
        (output_dir / "size.json").write_text(json.dumps(metrics), encoding="utf-8")
        summary = {"metrics": metrics}
        if not passed:
            summary["failed"] = f"size {size} > {self.options.max_bytes}"
        return EvaluationReport(output_dir, passed=passed, summary=summary)


class FiguresEvaluator(Evaluator):
    """Reports the figures a quantization search judges, planted in the project's ``figures.json`` (by variant)."""

    PLUGIN_NAME = "figures"
    METRICS = {  # noqa: RUF012 - read only
        "top1_agreement": Metric("planted top-1 agreement", "fraction"),
        "size_mb": Metric("planted size", "MB", higher_is_better=False),
        "decode_tokens_per_s": Metric("planted decode speed", "tokens/s", depends_on_machine=True),
        "adapter_cost": Metric("planted cost of a runtime adapter", "x", adapter_only=True),
    }

    def run(self, artifact, output_dir):
        _log(self, "figures")
        planted = json.loads((self.context.project_dir / "figures.json").read_text()).get(self.context.variant, {})
        metrics = {name: planted[name] for name in self.METRICS if name in planted}
        return EvaluationReport(output_dir, passed=True, summary={"metrics": metrics})


@attrs.define
class DirOptions:
    folder: str = option(help="the registry folder, relative to the project")


class DirRegistrar(Registrar):
    PLUGIN_NAME = "dir"
    Options = DirOptions

    def target(self):
        return self.context.project_dir / self.options.folder / self.context.project_name / self.context.variant

    def run(self, artifact, output_dir):
        _log(self, "register")
        target = self.target()
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(artifact.path, target)
        (output_dir / "registration.json").write_text(json.dumps({"target": str(target)}), encoding="utf-8")
        return Registration(
            target, registry="dir", model_id=f"{self.context.project_name}:{self.context.project_version}"
        )

    def is_current(self, artifact):
        return artifact.path.is_dir()

    def unregister(self, artifact):
        shutil.rmtree(artifact.path)
        return f"removed {artifact.path}"


class EchoChat:
    """Answers with the last user message reversed, word by word; remembers the conversation it saw."""

    runtime = "echo (fake)"

    def __init__(self, folder):
        self.folder = folder
        self.finish_reason = "stop"

    CONTEXT_WORDS = 50

    def stream(self, messages, max_tokens=None):
        size = sum(len(message["content"].split()) for message in messages)
        if size >= self.CONTEXT_WORDS:
            raise InputError(f"the prompt is {size} words, but the model's context holds {self.CONTEXT_WORDS}")
        if messages[-1]["content"] == "crash":
            raise RuntimeError("chat_session.cc:1374 native failure " + "x" * 10_000)
        words = messages[-1]["content"].split()[::-1]
        words.append(f"(turn {sum(m['role'] == 'user' for m in messages)})")
        self.finish_reason = "length" if max_tokens and len(words) > max_tokens else "stop"
        for word in words[:max_tokens]:
            yield word + " "

    def close(self):
        pass


@hookimpl
def slmdeploy_register_converters():
    _hook_fault("slmdeploy_register_converters")
    return [CopyConverter]


@hookimpl
def slmdeploy_register_quantizers():
    return [FakeQuantizer]


@hookimpl
def slmdeploy_register_templates():
    return [FakeFamily]


@hookimpl
def slmdeploy_register_evaluators():
    return [SizeEvaluator, FiguresEvaluator]


@hookimpl
def slmdeploy_quantize_candidates(quantizer, table, search):
    """Three candidates of the fake quantizer, cheapest first; none for another quantizer."""
    _hook_fault("slmdeploy_quantize_candidates")
    if quantizer != "fake":
        return None
    return [
        Candidate("int4-a", {"precision": "int4", "tag": "a"}, "int4, tagged a"),
        Candidate("int4-b", {"precision": "int4", "tag": "b"}, "int4, tagged b"),
        Candidate("int8", {"precision": "int8"}, "int8"),
    ]


@hookimpl
def slmdeploy_write_report(build_dir, reports):
    _hook_fault("slmdeploy_write_report")
    for report in reports:
        lines = [f"{report['variant']}: {report['status']}"]
        lines += [
            f"{gate['gate']} {gate['measured']} {'ok' if gate['passed'] else 'FAILED'}" for gate in report["gates"]
        ]
        (Path(report["folder"]) / "report.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@hookimpl
def slmdeploy_register_registrars():
    return [DirRegistrar]


@hookimpl
def slmdeploy_template_family(model):
    _hook_fault("slmdeploy_template_family")
    return "fakefam" if model.model_type == "fake" else None


@hookimpl
def slmdeploy_chat_backend(model):
    _hook_fault("slmdeploy_chat_backend")
    return EchoChat(model.folder) if (model.registration or {}).get("registry") == "dir" else None


@hookimpl
def slmdeploy_check_project(options):
    _hook_fault("slmdeploy_check_project")
    if os.environ.get("FAKE_REJECT_GPU") and options.table("convert").options.get("device") == "gpu":
        raise ConfigError("device gpu is rejected by the fake plugin", where=options.project.locate("convert.device"))


def make_model(folder: Path, model_type: str = "fake") -> Path:
    """A fake source model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["Fake"]}))
    (folder / "weights.bin").write_bytes(os.urandom(4096))
    return folder
