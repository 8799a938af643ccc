"""The ``slmdeploy`` command. Heavy modules are imported inside commands so ``--help`` starts fast."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import textwrap
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from slmdeploy import __version__
from slmdeploy.errors import SlmdeployError

if TYPE_CHECKING:
    from slmdeploy.execute.pipeline import Pipeline

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class Session:
    """What every command shares: the project folder and how to load the project and plugins."""

    def __init__(self, project_dir: Path, debug: bool, plain: bool, disabled: tuple[str, ...]) -> None:
        self.project_dir = project_dir
        self.debug = debug
        self.plain = plain
        self.disabled = disabled

    def plugin_manager(self) -> Any:
        from slmdeploy.host.manager import get_plugin_manager

        return get_plugin_manager(self.project_dir, self.disabled)

    def parts(self) -> tuple[Any, Any, Any]:
        """The project file, the installed stage implementations, and the project's cache."""
        from slmdeploy.config.project import PROJECT_FILE, load_project
        from slmdeploy.execute.cache import STATE_DIR, Store
        from slmdeploy.host.registry import Registry

        project = load_project(self.project_dir / PROJECT_FILE)
        return project, Registry(self.plugin_manager()), Store(project.root / STATE_DIR)

    def pipeline(self, jobs: int = 1) -> Pipeline:
        from slmdeploy.execute.pipeline import Pipeline
        from slmdeploy.execute.progress import make_reporter
        from slmdeploy.plan.planner import make_plan

        project, registry, store = self.parts()
        try:
            plan = make_plan(project, registry, store.digests)
        finally:
            store.digests.save()
        return Pipeline(plan, registry, store, make_reporter(self.plain), jobs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slmdeploy")
@click.option(
    "-C",
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    help="The project folder, holding slmdeploy.toml.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--plain", is_flag=True, help="Plain progress lines instead of spinners.")
@click.option(
    "--disable-plugin",
    "disabled",
    multiple=True,
    metavar="NAME",
    help="Do not load this plugin (entry point name); repeatable. Also SLMDEPLOY_DISABLE_PLUGINS.",
)
@click.pass_context
def cli(ctx: click.Context, project_dir: Path, debug: bool, plain: bool, disabled: tuple[str, ...]) -> None:
    """Build fine-tuned small language models into deployable, quantized, evaluated ONNX models.

    Run `slmdeploy build` in a folder holding slmdeploy.toml (`slmdeploy init` writes one).
    """
    ctx.obj = Session(project_dir, debug, plain, disabled)


@cli.command()
@click.option("--name", help="The model name to write (default: the folder's name).")
@click.pass_obj
def init(session: Session, name: str | None) -> None:
    """Write a commented starter slmdeploy.toml (never overwrites)."""
    from slmdeploy.config.scaffold import write_starter

    file = write_starter(session.project_dir, name)
    click.echo(f"wrote {file}; edit [source] path, then run `slmdeploy plan`.")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plan(session: Session, as_json: bool) -> None:
    """Show what `build` would run and what is cached."""
    from slmdeploy.execute.preview import preview

    pipeline = session.pipeline()
    variants: list[dict[str, Any]] = [
        {"variant": variant.name, "steps": preview(pipeline.runner, variant)} for variant in pipeline.plan.variants
    ]
    if as_json:
        click.echo(json.dumps({"project": pipeline.plan.project.project.name, "variants": variants}, indent=2))
        return
    for variant in variants:
        click.echo(f"{variant['variant']}:")
        for step in variant["steps"]:
            key = step["key"][:12] if step["key"] else "-"
            click.echo(f"  {step['table']:<22} {step['plugin']:<14} {step['status']:<7} {key}")


@cli.command()
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="CPU count",
    help="Stages run side by side at most (only while three times their inputs fit in free memory).",
)
@click.pass_obj
def build(session: Session, jobs: int) -> None:
    """Build every variant of the project, reusing cached stage outputs."""
    from slmdeploy.execute.cache import project_lock

    pipeline = session.pipeline(jobs)
    with project_lock(pipeline.store.state_dir, pipeline.reporter.say):
        pipeline.store.remove_stale_tmp()
        results = pipeline.build()
    failed = [result for result in results if result.failed]
    for result in results:
        ran = sum(not step.cached for step in result.results)
        if result.skipped:
            click.echo(f"{result.variant.name}: not built (fallback not needed)")
        elif result.fell_back_to:
            click.echo(f"{result.variant.name}: failed its gates, fell back to {result.fell_back_to}")
            click.echo(textwrap.indent(str(result.error), "  "))
        elif result.error is not None:
            click.echo(f"{result.variant.name}: failed ({ran} run) - see the error below")
        else:
            state = "built" if ran else "up to date"
            click.echo(
                f"{result.variant.name}: {state} ({ran} run, {len(result.results) - ran} cached) -> {result.folder}"
            )
    chain = [r for r in results if r.variant.name in pipeline.plan.fallback and not r.skipped and r.error is None]
    if chain:
        click.echo(
            f"fallback: deploying {chain[0].variant.name}, the first of {', '.join(pipeline.plan.fallback)} "
            "that passed its gates"
        )
    from slmdeploy.execute.publish import REPORT

    if any(result.folder and (result.folder / REPORT).is_file() for result in results):
        click.echo("report: `slmdeploy report`")
    if len(failed) == 1 and len(results) == 1:
        raise failed[0].error  # type: ignore[misc]
    by_error: dict[int, list[Any]] = {}  # a shared step's error stopped several variants: say it once
    for result in failed:
        by_error.setdefault(id(result.error), []).append(result)
    for group in by_error.values():
        if session.debug:
            traceback.print_exception(group[0].error)
        report_error(f"{', '.join(result.variant.name for result in group)}: {group[0].error}")
    if failed:
        start = "Fix" if len(failed) == len(results) else "The other variants were built; fix"
        raise SlmdeployError(
            f"{len(failed)} of {len(results)} variants failed ({', '.join(r.variant.name for r in failed)})",
            fix=f"{start} the errors above and build again.",
        )


@cli.command()
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
            from slmdeploy.deploy.registrations import unregister_all

            project, plugins, store = session.parts()
            for line in unregister_all(project, plugins, store, make_reporter(session.plain)):
                click.echo(line)
        removed = [
            folder
            for folder in (session.project_dir / BUILD_DIR, state_dir / "cache", state_dir / "tmp")
            if folder.exists()
        ]
        for folder in removed:
            shutil.rmtree(folder)
        (state_dir / "digests.json").unlink(missing_ok=True)
    click.echo("removed " + (", ".join(str(folder) for folder in removed) if removed else "nothing"))


@cli.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_deployed(session: Session, as_json: bool) -> None:
    """List the deployed models: name, version, precision, size, where registered, when built."""
    from slmdeploy.deploy.listing import deployed_models
    from slmdeploy.execute.publish import BUILD_DIR

    models = deployed_models(session.project_dir / BUILD_DIR)
    if as_json:
        click.echo(json.dumps([model.as_json() for model in models], indent=2))
        return
    rows = [("NAME", "VERSION", "PRECISION", "SIZE", "GATES", "REGISTERED", "BUILT")]
    for model in models:
        where = "-"
        if model.registration:
            where = f"{model.registration['registry']}: {model.registration['model_id']}"
        rows.append(
            (
                model.name,
                str(model.version),
                model.precision,
                f"{model.size_bytes / 1e6:.1f} MB",
                model.gates or "-",
                where,
                model.built_at,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: every variant's report.json.")
@click.pass_obj
def report(session: Session, as_json: bool) -> None:
    """Summarize the evaluation of the latest build: figures, failed gates, and the report and plot files."""
    from slmdeploy.deploy.reports import read_reports, render_summary
    from slmdeploy.execute.publish import BUILD_DIR

    reports = read_reports(session.project_dir / BUILD_DIR)
    click.echo(json.dumps(reports, indent=2) if as_json else render_summary(reports))


@cli.command()
@click.argument("name")
@click.option("--prompt", help="Answer this once and exit (for scripts).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="At most this many tokens per answer.")
@click.pass_obj
def run(session: Session, name: str, prompt: str | None, max_tokens: int | None) -> None:
    """Chat with a deployed model: /exit or Ctrl-D ends the conversation."""
    from slmdeploy.deploy.chat import chat_loop, open_backend

    backend = open_backend(session.project_dir, name, session.plugin_manager())
    try:
        chat_loop(backend, prompt, max_tokens)
    finally:
        backend.close()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--options", "with_options", is_flag=True, help="Also list each stage plugin's table keys.")
@click.pass_obj
def plugins(session: Session, as_json: bool, with_options: bool) -> None:
    """List loaded plugins: name, version, hooks, where from, and the stages they provide."""
    from slmdeploy.host.inventory import describe_plugins, render_plugins

    listing = describe_plugins(session.plugin_manager(), with_options)
    click.echo(json.dumps(listing, indent=2) if as_json else render_plugins(listing))


def report_error(error: BaseException | str) -> None:
    """The error's first line as a wrapped paragraph; the lines after it (a log's end, a table) as they are."""
    paragraph, newline, rest = f"error: {error}".partition("\n")
    text = textwrap.fill(
        paragraph,
        width=max(60, min(shutil.get_terminal_size().columns, 110)),
        break_long_words=False,
        break_on_hyphens=False,
    )
    click.echo(text + newline + rest, err=True)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    signal.signal(signal.SIGTERM, _terminate)  # a terminated build cleans up as an interrupted one does
    try:
        cli.main(args=args, prog_name="slmdeploy", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("interrupted: completed stages are cached; `slmdeploy build` continues from there.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except SlmdeployError as error:
        if debug:
            traceback.print_exc()
        report_error(error)
        sys.exit(error.exit_code)
    except OSError as error:  # a full disk, a permission, a missing file outside any stage
        if debug:
            traceback.print_exc()
        report_error(
            f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
            + ". Free space or fix the permissions, then run the command again"
        )
        sys.exit(EXIT_USER_ERROR)
