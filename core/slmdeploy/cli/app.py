"""The ``slmdeploy`` command group, its global options, and `main`: errors become one paragraph and an exit code.

Each command lives in the module of its group (`build`, `deployments`, `serve`, `plugins`); heavy modules are imported
inside the commands so ``--help`` starts fast."""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

import click

from slmdeploy import __version__
from slmdeploy.cli.build import build, clean, init, plan
from slmdeploy.cli.deployments import list_deployed, report, run
from slmdeploy.cli.output import report_error
from slmdeploy.cli.plugins import plugins
from slmdeploy.cli.serve import serve
from slmdeploy.cli.session import Session
from slmdeploy.errors import SlmdeployError, brief, filesystem_error

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


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


for command in (init, plan, build, clean, list_deployed, report, run, serve, plugins):
    cli.add_command(command)


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
        _fail(error, error.exit_code, debug)
    except OSError as error:  # a full disk, a permission, a missing file outside any stage
        found = filesystem_error(error, Path.cwd())
        message = f"{error.strerror or error}: {error.filename or ''}".rstrip(": ") + ". Check that path, then run "
        _fail(found or message + "the command again", EXIT_USER_ERROR, debug)
    except Exception as error:  # noqa: BLE001 - a bug: still one paragraph, the traceback only with --debug
        _fail(
            f"slmdeploy crashed: {brief(error)}. This is a bug: run again with --debug for the traceback, and report "
            "it with the command used",
            EXIT_USER_ERROR,
            debug,
        )


def _fail(error: BaseException | str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    report_error(error)
    sys.exit(code)
