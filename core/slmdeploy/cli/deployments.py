"""What the project has deployed: ``slmdeploy ls``, ``report`` and ``run``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from slmdeploy.cli.options import json_option, threads_option
from slmdeploy.cli.output import echo_columns
from slmdeploy.cli.session import Session

if TYPE_CHECKING:
    from slmdeploy.deployed import DeployedModel

LS_HEADER = ("NAME", "VERSION", "PRECISION", "SIZE", "GATES", "REGISTERED", "BUILT")


@click.command(name="ls")
@json_option()
@click.pass_obj
def list_deployed(session: Session, as_json: bool) -> None:
    """List the deployed models: name, version, precision, size, where registered, when built; and what a
    registration that was cut short left in a registry."""
    from slmdeploy.deploy.listing import deployed_models
    from slmdeploy.execute.publish import BUILD_DIR

    models = deployed_models(session.project_dir / BUILD_DIR)
    check = _registry_check(session, models)
    stale = check.stale if check else frozenset()
    leftovers = check.leftovers if check else ()
    if as_json:
        listed = [{**model.as_json(), "registration_current": _current(model, stale)} for model in models]
        listed += [
            {"name": item.model_id, "leftover": {"path": str(item.path), "state": item.state, "fix": item.fix}}
            for item in leftovers
        ]
        click.echo(json.dumps(listed, indent=2))
        return
    rows = [_ls_row(model, stale) for model in models]
    rows += [(item.model_id, "-", "-", _size(item.path), "-", "left over (see below)", "-") for item in leftovers]
    echo_columns([LS_HEADER, *rows])
    for model in models:
        if model.name in stale and model.registration:
            click.echo(
                f"{model.name}: the registration {model.registration.get('model_id')} recorded by the last build "
                "is no longer current (removed, or replaced by a registration that was cut short). "
                "Run `slmdeploy build` to register it again."
            )
    for item in leftovers:
        click.echo(f"{item.model_id}: {item.state} ({item.path}). {item.fix}")
    _say_shared(models)


def _say_shared(models: list[DeployedModel]) -> None:
    """Which variants are runtime LoRA adapters on another's files (their SIZE is the adapter file's alone)."""
    bases: dict[str, list[str]] = {}
    for model in models:
        if model.base is not None:
            bases.setdefault(model.base, []).append(model.variant)
    for base, variants in bases.items():
        click.echo(
            f"{', '.join(variants)}: LoRA adapters applied at run time on {base}'s files (held once; SIZE is the "
            "adapter file's). `slmdeploy serve` answers each as NAME:ADAPTER on one loaded base."
        )


def _registry_check(session: Session, models: list[DeployedModel]) -> Any:
    """What the registrars find in their own files; None when the project file cannot be read (``ls`` still
    lists the build folder)."""
    from slmdeploy.deploy.registrations import check_registrations
    from slmdeploy.errors import SlmdeployError

    try:
        project, registry, store = session.parts()
    except SlmdeployError:
        return None
    return check_registrations(project, registry, store, models)


def _current(model: DeployedModel, stale: frozenset[str]) -> bool | None:
    return None if not model.registration else model.name not in stale


def _size(folder: Path) -> str:
    from slmdeploy.files import tree_size

    return f"{tree_size(folder) / 1e6:.1f} MB"


def _ls_row(model: DeployedModel, stale: frozenset[str]) -> tuple[str, ...]:
    where = "-"
    if model.registration:
        where = f"{model.registration['registry']}: {model.registration['model_id']}"
        where += " (not current)" if model.name in stale else ""
    size = f"{model.size_bytes / 1e6:.1f} MB"
    return (model.name, str(model.version), model.precision, size, model.gates or "-", where, model.built_at)


@click.command()
@json_option("Machine-readable output: every variant's report.json.")
@click.pass_obj
def report(session: Session, as_json: bool) -> None:
    """Summarize the evaluation of the latest build: figures, failed gates, and the report and plot files."""
    from slmdeploy.deploy.reports import read_reports, render_summary
    from slmdeploy.execute.publish import BUILD_DIR

    reports = read_reports(session.project_dir / BUILD_DIR)
    click.echo(json.dumps(reports, indent=2) if as_json else render_summary(reports))


@click.command()
@click.argument("name")
@click.option("--prompt", help="Answer this once and exit (for scripts).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="At most this many tokens per answer.")
@threads_option
@click.pass_obj
def run(session: Session, name: str, prompt: str | None, max_tokens: int | None, threads: int) -> None:
    """Chat with a deployed model: /exit or Ctrl-D ends the conversation."""
    from slmdeploy.deploy.chat import chat_loop, open_backend

    backend = open_backend(session.project_dir, name, session.plugin_manager(), threads)
    try:
        chat_loop(backend, prompt, max_tokens)
    finally:
        backend.close()
