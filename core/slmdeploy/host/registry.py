"""The registry of stage implementations the loaded plugins provide, by stage and `PLUGIN_NAME`, each with the
plugin (and its version) that registered it."""

from __future__ import annotations

from typing import Any

import attrs
import pluggy

from slmdeploy.config.options import fields_of
from slmdeploy.errors import PluginError, brief, filesystem_error
from slmdeploy.host.development import development_version
from slmdeploy.stages import STAGE_BASES, STAGE_ORDER, Stage

REGISTRATION_HOOKS = {
    "convert": "slmdeploy_register_converters",
    "quantize": "slmdeploy_register_quantizers",
    "template": "slmdeploy_register_templates",
    "evaluate": "slmdeploy_register_evaluators",
    "register": "slmdeploy_register_registrars",
}


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
            raise filesystem_error(error) or PluginError(
                f"plugin {plugin_name!r} ({origin}): the Options of {cls.__name__} are not a valid "
                f"attrs class with resolvable annotations: {brief(error)}",
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
        raise filesystem_error(error) or PluginError(
            f"plugin {impl.plugin_name!r} failed in {impl.function.__name__}: {brief(error)}",
            fix="This looks like a bug: run with --debug for the traceback, and report it to the plugin's authors.",
        ) from error


def plugin_version(manager: pluggy.PluginManager, name: str, plugin: Any) -> tuple[str, str]:
    """The (version, origin) of a registered plugin: its distribution, or the local file's digest."""
    for registered, dist in manager.list_plugin_distinfo():
        if registered is plugin:
            version = development_version(dist, plugin, str(dist.version))
            return version, f"{dist.project_name} {version}"
    local_version = getattr(plugin, "__slmdeploy_version__", None)
    if local_version:
        return str(local_version), str(getattr(plugin, "__file__", name))
    from slmdeploy import __version__

    module = getattr(plugin, "__name__", name)
    return __version__, f"{module} (registered in-process)"
