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
