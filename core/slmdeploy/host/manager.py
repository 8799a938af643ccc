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
from typing import Any

import attrs
import pluggy

from slmdeploy import hookspecs
from slmdeploy.config.options import fields_of
from slmdeploy.errors import PluginError
from slmdeploy.host import builtin
from slmdeploy.stages import STAGE_BASES, STAGE_ORDER, Stage

ENTRY_POINT_GROUP = "slmdeploy"
LOCAL_PLUGINS = "slmdeploy_plugins.py"
REGISTRATION_HOOKS = {
    "convert": "slmdeploy_register_converters",
    "quantize": "slmdeploy_register_quantizers",
    "template": "slmdeploy_register_templates",
    "evaluate": "slmdeploy_register_evaluators",
    "register": "slmdeploy_register_registrars",
}


def get_plugin_manager(project_dir: Path | None = None, disabled: Iterable[str] = ()) -> pluggy.PluginManager:
    """A plugin manager with every plugin loaded. Nothing is loaded at import time."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    blocked = {*disabled, *filter(None, os.environ.get("SLMDEPLOY_DISABLE_PLUGINS", "").split(","))}
    for name in blocked:
        manager.set_blocked(name.strip())
    if project_dir is not None:
        _load_local_plugins(manager, project_dir / LOCAL_PLUGINS)
    try:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as error:
        raise PluginError(
            f"a plugin of entry point group {ENTRY_POINT_GROUP!r} failed to load: {error!r}",
            fix="Upgrade or uninstall the plugin package, or block it with SLMDEPLOY_DISABLE_PLUGINS=<name>.",
        ) from error
    # Registered last so that its trylast fallback runs after every plugin's trylast implementation.
    manager.register(builtin, name="slmdeploy.builtin")
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(
            f"plugin {error.plugin!r} implements a hook slmdeploy does not define: {error}",
            fix="Check the hook name against slmdeploy.hookspecs, or upgrade the plugin.",
        ) from error
    if os.environ.get("SLMDEPLOY_TRACE_PLUGINS"):
        manager.trace.root.setwriter(sys.stderr.write)
        manager.enable_tracing()
    return manager


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
        raise PluginError(
            f"the local plugin file failed to import: {error!r}",
            where=str(file),
            fix="Fix the error in that file (run with --debug for the traceback).",
        ) from error
    digest = hashlib.sha256(file.read_text(encoding="utf-8").encode()).hexdigest()
    module.__slmdeploy_version__ = "local-" + digest[:12]  # type: ignore[attr-defined]
    manager.register(module, name=LOCAL_PLUGINS)


@attrs.frozen
class Provided:
    """A stage class, with the plugin that registered it."""

    cls: type[Stage]
    plugin: str
    version: str
    origin: str


class Registry:
    """Every stage implementation the loaded plugins provide, by stage and `PLUGIN_NAME`."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self.stages: dict[str, dict[str, Provided]] = {stage: {} for stage in STAGE_ORDER}
        for stage in STAGE_ORDER:
            for impl in getattr(manager.hook, REGISTRATION_HOOKS[stage]).get_hookimpls():
                # Called one implementation at a time to know who registered what; traced like a hook call.
                manager.trace.root.get("hook")(f"{REGISTRATION_HOOKS[stage]} of {impl.plugin_name!r}")
                for cls in _call(impl) or ():
                    self._add(stage, cls, impl.plugin_name, impl.plugin)

    def _add(self, stage: str, cls: Any, plugin_name: str, plugin: Any) -> None:
        base = STAGE_BASES[stage]
        if not (isinstance(cls, type) and issubclass(cls, base)) or not getattr(cls, "PLUGIN_NAME", None):
            raise PluginError(
                f"plugin {plugin_name!r} registered {cls!r} for [{stage}], which is not a "
                f"{base.__name__} subclass with a PLUGIN_NAME",
                fix=f"Return subclasses of slmdeploy.plugin.{base.__name__} from the hook.",
            )
        version, origin = plugin_version(self.manager, plugin_name, plugin)
        try:
            fields_of(cls.Options)
        except Exception as error:
            raise PluginError(
                f"plugin {plugin_name!r} ({origin}): the Options of {cls.__name__} are not a valid "
                f"attrs class with resolvable annotations: {error!r}",
                fix="Decorate Options with @attrs.define and import every type its annotations name.",
            ) from error
        existing = self.stages[stage].get(cls.PLUGIN_NAME)
        if existing is not None:
            raise PluginError(
                f"two plugins provide a {stage} implementation named {cls.PLUGIN_NAME!r}: "
                f"{existing.plugin!r} ({existing.origin}) and {plugin_name!r} ({origin})",
                fix="Uninstall one of them, or block one with SLMDEPLOY_DISABLE_PLUGINS=<name>.",
            )
        self.stages[stage][cls.PLUGIN_NAME] = Provided(cls, plugin_name, version, origin)

    def get(self, stage: str, name: str) -> Provided | None:
        return self.stages[stage].get(name)

    def names(self, stage: str) -> list[str]:
        return sorted(self.stages[stage])


def _call(impl: Any) -> Any:
    try:
        return impl.function()
    except Exception as error:
        raise PluginError(
            f"plugin {impl.plugin_name!r} failed in {impl.function.__name__}: {error!r}",
            fix="Report this to the plugin's authors; run with --debug for the traceback.",
        ) from error


def plugin_version(manager: pluggy.PluginManager, name: str, plugin: Any) -> tuple[str, str]:
    """The (version, origin) of a registered plugin: its distribution, or the local file's digest."""
    for registered, dist in manager.list_plugin_distinfo():
        if registered is plugin:
            return str(dist.version), f"{dist.project_name} {dist.version}"
    local_version = getattr(plugin, "__slmdeploy_version__", None)
    if local_version:
        return str(local_version), str(getattr(plugin, "__file__", name))
    from slmdeploy import __version__

    module = getattr(plugin, "__name__", name)
    return __version__, f"{module} (registered in-process)"
