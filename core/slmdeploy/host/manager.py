"""Loading plugins, and the registry of stage implementations they provide.

`get_plugin_manager` loads, in order: a local ``slmdeploy_plugins.py`` beside ``slmdeploy.toml``, the entry
points of group ``slmdeploy``, the core's built-in fallbacks; then checks every hook implementation against
its spec. Set ``SLMDEPLOY_DISABLE_PLUGINS=name,name`` to block plugins by entry point name, and
``SLMDEPLOY_TRACE_PLUGINS=1`` to trace every hook call on stderr.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pluggy

from slmdeploy import hookspecs
from slmdeploy.errors import PluginError, brief, filesystem_error
from slmdeploy.host import builtin

ENTRY_POINT_GROUP = "slmdeploy"
LOCAL_PLUGINS = "slmdeploy_plugins.py"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering which plugins were blocked and by what, for the errors that follow."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.disabled: dict[str, str] = {}
        """Blocked plugin names, each with what blocked it (``--disable-plugin olive``, or the variable)."""


def get_plugin_manager(project_dir: Path | None = None, disabled: Iterable[str] = ()) -> PluginManager:
    """A plugin manager with every plugin loaded. Nothing is loaded at import time."""
    manager = PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    from_environment = [name.strip() for name in os.environ.get("SLMDEPLOY_DISABLE_PLUGINS", "").split(",")]
    manager.disabled = {name: "SLMDEPLOY_DISABLE_PLUGINS" for name in from_environment if name}
    manager.disabled |= {name.strip(): f"--disable-plugin {name.strip()}" for name in disabled if name.strip()}
    for name in manager.disabled:
        manager.set_blocked(name)
    if project_dir is not None:
        _load_local_plugins(manager, project_dir / LOCAL_PLUGINS)
    try:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as error:
        raise filesystem_error(error) or PluginError(
            f"a plugin of entry point group {ENTRY_POINT_GROUP!r} failed to load: {brief(error)}",
            fix="Upgrade or uninstall the plugin package, or block it with SLMDEPLOY_DISABLE_PLUGINS=<name>.",
        ) from error
    _warn_unknown_blocked(manager)
    # Registered last so that its trylast fallback runs after every plugin's trylast implementation.
    manager.register(builtin, name="slmdeploy.builtin")
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise filesystem_error(error) or PluginError(
            f"plugin {error.plugin!r} implements a hook slmdeploy does not define: {error}",
            fix="Check the hook name against slmdeploy.hookspecs, or upgrade the plugin.",
        ) from error
    if os.environ.get("SLMDEPLOY_TRACE_PLUGINS"):
        manager.trace.root.setwriter(sys.stderr.write)
        manager.enable_tracing()
    return manager


def _warn_unknown_blocked(manager: PluginManager) -> None:
    """A blocked name that no installed plugin has blocks nothing: say so (a typo would leave the plugin on)."""
    if not manager.disabled:
        return
    import importlib.metadata

    installed = sorted({entry.name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
    for name, by in manager.disabled.items():
        if name not in installed and name != LOCAL_PLUGINS:
            sys.stderr.write(
                f"warning: {by} names {name!r}, which no installed slmdeploy plugin is called, so it blocks nothing. "
                f"Installed: {', '.join(installed) or 'none'} (and {LOCAL_PLUGINS}).\n"
            )


def _load_local_plugins(manager: pluggy.PluginManager, file: Path) -> None:
    if not file.is_file() or manager.is_blocked(LOCAL_PLUGINS):
        return
    spec = importlib.util.spec_from_file_location("slmdeploy_plugins", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # typing.get_type_hints looks the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[spec.name]
        raise filesystem_error(error) or PluginError(
            f"the local plugin file failed to import: {brief(error)}",
            where=str(file),
            fix="Fix the error in that file (run with --debug for the traceback).",
        ) from error
    digest = hashlib.sha256(file.read_text(encoding="utf-8").encode()).hexdigest()
    module.__slmdeploy_version__ = "local-" + digest[:12]  # type: ignore[attr-defined]
    manager.register(module, name=LOCAL_PLUGINS)
