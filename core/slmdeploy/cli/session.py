"""What every command shares: the project folder, and loading the project, its plugins and its cache.

Heavy modules are imported inside the methods, so ``slmdeploy --help`` starts fast."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slmdeploy.execute.pipeline import Pipeline


class Session:
    """The global options of a command line, and how to load the project and plugins."""

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
        cache_dir = project.build.cache_dir
        root = (project.root / cache_dir).resolve() if cache_dir else None
        return project, Registry(self.plugin_manager()), Store(project.root / STATE_DIR, root)

    def pipeline(self, jobs: int = 1, executor: str | None = None, address: str | None = None) -> Pipeline:
        """The project's plan, ready to build with `executor` (``local`` or ``ray``; else ``[build] executor``)."""
        import click

        from slmdeploy.config.project_options import project_options
        from slmdeploy.execute.pipeline import Pipeline
        from slmdeploy.execute.progress import make_reporter
        from slmdeploy.plan.planner import make_plan

        project, registry, store = self.parts()
        for shadowing in registry.shadowings:  # a plugin installed later may change what a build makes: say so
            click.echo(f"notice: {shadowing.notice()}.", err=True)
        chosen = _executor(project, executor or project.build.executor, jobs, address)
        try:
            plan = make_plan(project_options(project), registry, store.digests)
        finally:
            store.digests.save()
        return Pipeline(plan, registry, store, make_reporter(self.plain), jobs, chosen)


def _executor(project: Any, name: str, jobs: int, address: str | None) -> Any:
    """The executor named on the command line or in ``[build]``: local worker processes, or a Ray cluster."""
    if name != "ray":
        from slmdeploy.execute.executors.local import LocalExecutor

        return LocalExecutor(jobs)
    from slmdeploy.execute.executors.ray import RayExecutor
    from slmdeploy.execute.executors.raynodes import require_ray

    require_ray()  # says how to install Ray, before anything is planned
    settings = project.build
    if address is not None:
        where = "--address"
    elif settings.address is not None:
        address, where = settings.address, project.locate("build.address")
    else:
        where = "RAY_ADDRESS"
    cache = project.locate("build.cache_dir") if settings.cache_dir else "[build] cache_dir (not set)"
    return RayExecutor(address, local_cpus=jobs, where={"address": where, "cache_dir": cache})
