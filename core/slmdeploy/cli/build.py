"""The project's build: ``slmdeploy init``, ``plan``, ``build`` and ``clean``."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from slmdeploy.cli.options import json_option
from slmdeploy.cli.output import report_error
from slmdeploy.cli.session import Session
from slmdeploy.errors import SlmdeployError

if TYPE_CHECKING:
    from slmdeploy.execute.results import VariantResult


@click.command()
@click.option("--name", help="The model name to write (default: the folder's name).")
@click.pass_obj
def init(session: Session, name: str | None) -> None:
    """Write a commented starter slmdeploy.toml (never overwrites)."""
    from slmdeploy.config.scaffold import write_starter

    file = write_starter(session.project_dir, name)
    click.echo(f"wrote {file}; edit [source] path, then run `slmdeploy plan`.")


@click.command()
@json_option()
@click.pass_obj
def plan(session: Session, as_json: bool) -> None:
    """Show what `build` would run and what is cached."""
    from slmdeploy.execute.preview import preview

    pipeline = session.pipeline()
    variants: list[dict[str, Any]] = [
        {"variant": variant.name, "steps": preview(pipeline.runner, variant)} for variant in pipeline.plan.variants
    ]
    axes = {axis: list(values) for axis, values in pipeline.plan.axes.items()}
    if as_json:
        document: dict[str, Any] = {"project": pipeline.plan.project.project.name, "matrix": axes, "variants": variants}
        if pipeline.plan.search is not None:
            import attrs

            document["search"] = {**attrs.asdict(pipeline.plan.search), "notes": _candidate_notes(pipeline.plan)}
        click.echo(json.dumps(document, indent=2))
        return
    if axes:
        matrix = " x ".join(f"{axis} ({', '.join(values)})" for axis, values in axes.items())
        click.echo(f"matrix: {matrix} = {len(variants)} variants")
    notes = _candidate_notes(pipeline.plan)
    if pipeline.plan.search is not None:
        click.echo(_search_line(pipeline.plan.search, len(variants)))
    for variant in variants:
        note = notes.get(variant["variant"])
        click.echo(f"{variant['variant']}:" + (f"  {note}" if note else ""))
        for step in variant["steps"]:
            click.echo(_plan_line(step))


def _candidate_notes(plan: Any) -> dict[str, str]:
    return {variant.name: step.note for variant in plan.variants for step in variant.steps if step.label and step.note}


def _search_line(search: Any, count: int) -> str:
    targets = [f"top-1 >= {search.min_top1}" if search.min_top1 is not None else ""]
    targets.append(f"size <= {search.max_size_mb} MB" if search.max_size_mb is not None else "")
    best = "the fastest decoder" if search.prefer == "decode" else "the smallest"
    return f"search: {count} candidates, cheapest first; deploys {best} that meets " + " and ".join(
        target for target in targets if target
    )


def _plan_line(step: dict[str, Any]) -> str:
    key = step["key"][:12] if step["key"] else "-"
    plugin = f"{step['plugin']}: {step['family']}" if step.get("family") else step["plugin"]
    line = f"  {step['table']:<22} {plugin:<14} {step['status']:<7} {key}"
    return f"{line}  ({step['note']})" if step.get("note") else line


@click.command()
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="CPU count",
    help="Stages run side by side at most (only while three times their inputs fit in free memory); with the ray "
    "executor and no cluster, the CPUs of the Ray instance started here.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    help="Where steps run: worker processes here, or tasks of a Ray cluster (default: [build] executor, else local).",
)
@click.option(
    "--address",
    metavar="ADDR",
    help="The Ray cluster (host:port) for --executor ray (default: [build] address, else RAY_ADDRESS, else a Ray "
    "instance started here for the build).",
)
@click.pass_obj
def build(session: Session, jobs: int, executor: str | None, address: str | None) -> None:
    """Build every variant of the project, reusing cached stage outputs."""
    from slmdeploy.execute.cache import project_lock
    from slmdeploy.execute.publish import REPORT
    from slmdeploy.search.run import build as build_plan
    from slmdeploy.search.run import summary

    pipeline = session.pipeline(jobs, executor, address)
    with project_lock(pipeline.store.state_dir, pipeline.reporter.say):
        pipeline.store.remove_stale_tmp()
        results = build_plan(pipeline)
    for result in results:
        click.echo(_outcome(result, searched=pipeline.plan.search is not None))
    if (line := summary(pipeline.plan, results)) is not None:
        click.echo(line)
    chain = [r for r in results if r.variant.name in pipeline.plan.fallback and not r.skipped and r.error is None]
    if chain:
        click.echo(
            f"fallback: deploying {chain[0].variant.name}, the first of {', '.join(pipeline.plan.fallback)} "
            "that passed its gates"
        )
    if any(result.folder and (result.folder / REPORT).is_file() for result in results):
        click.echo("report: `slmdeploy report`")
    _raise_failures(results, session.debug)


def _outcome(result: VariantResult, searched: bool = False) -> str:
    """One variant's line after a build (with its gate table when it fell back)."""
    name, ran = result.variant.name, sum(not step.cached for step in result.results)
    if result.skipped:
        return f"{name}: not built (fallback not needed)"
    if searched and result.fell_back_to:
        return f"{name}: missed the search's targets or gates\n" + textwrap.indent(str(result.error), "  ")
    if result.fell_back_to:
        return f"{name}: failed its gates, fell back to {result.fell_back_to}\n" + textwrap.indent(
            str(result.error), "  "
        )
    if result.error is not None:
        return f"{name}: failed ({ran} run) - see the error below"
    state = "built" if ran else "up to date"
    role = " (chosen by the search)" if result.chosen else " (a candidate, not deployed)" if searched else ""
    if result.variant.adapter:
        role = (
            f" (LoRA adapter {result.variant.adapter} on {result.variant.base}'s files; served by `slmdeploy serve` "
            "and `run`, never registered: Foundry Local cannot load adapters)"
        )
    return f"{name}: {state} ({ran} run, {len(result.results) - ran} cached){role} -> {result.folder}"


def _raise_failures(results: Sequence[VariantResult], debug: bool) -> None:
    """Report every failure once (a shared step's error stopped several variants), then fail the command."""
    failed = [result for result in results if result.failed]
    if len(failed) == 1 and len(results) == 1:
        raise failed[0].error  # type: ignore[misc]
    by_error: dict[int, list[VariantResult]] = {}
    for result in failed:
        by_error.setdefault(id(result.error), []).append(result)
    for group in by_error.values():
        if debug:
            traceback.print_exception(group[0].error)  # type: ignore[arg-type]
        report_error(f"{', '.join(result.variant.name for result in group)}: {group[0].error}")
    if failed:
        start = "Fix" if len(failed) == len(results) else "The other variants were built; fix"
        raise SlmdeployError(
            f"{len(failed)} of {len(results)} variants failed ({', '.join(r.variant.name for r in failed)})",
            fix=f"{start} the errors above and build again.",
        )


@click.command()
@click.option("--registry", is_flag=True, help="Also unregister and remove what builds registered (Foundry Local).")
@click.pass_obj
def clean(session: Session, registry: bool) -> None:
    """Remove the build/ folder and the stage cache; with --registry, registrations too."""
    from slmdeploy.execute.cache import STATE_DIR, project_lock
    from slmdeploy.execute.progress import make_reporter
    from slmdeploy.execute.publish import BUILD_DIR

    state_dir = session.project_dir / STATE_DIR
    with project_lock(state_dir, make_reporter(session.plain).say):
        if registry:
            _unregister(session)
        root = _cache_root(session) or state_dir
        candidates = dict.fromkeys((session.project_dir / BUILD_DIR, state_dir / "cache", state_dir / "tmp"))
        candidates.update(dict.fromkeys((root / "cache", root / "tmp")))
        removed = [folder for folder in candidates if folder.exists()]
        for folder in removed:
            shutil.rmtree(folder)
        (state_dir / "digests.json").unlink(missing_ok=True)
    click.echo("removed " + (", ".join(str(folder) for folder in removed) if removed else "nothing"))


def _cache_root(session: Session) -> Any:
    """``[build] cache_dir`` when the project file sets it and can be read (clean works on a broken file too)."""
    from slmdeploy.config.project import PROJECT_FILE, load_project

    try:
        cache_dir = load_project(session.project_dir / PROJECT_FILE).build.cache_dir
    except SlmdeployError:
        return None
    return (session.project_dir / cache_dir).resolve() if cache_dir else None


def _unregister(session: Session) -> None:
    from slmdeploy.deploy.registrations import unregister_all
    from slmdeploy.execute.progress import make_reporter

    project, plugins, store = session.parts()
    for line in unregister_all(project, plugins, store, make_reporter(session.plain)):
        click.echo(line)
