"""The registry of stage implementations the loaded plugins provide, by stage and `PLUGIN_NAME`, each with the
plugin (and its version) that registered it.

When two plugins register one name for one stage, an installed third-party implementation takes precedence over
the one shipped with slmdeploy (a plugin of the distribution ``slmdeploy``): a user who installed it expects it to
be used, and a new shipped plugin must not break it. The registry records who shadows whom, for ``slmdeploy
plugins`` and ``slmdeploy plan`` to say. Two third-party implementations of one name are a clash: an error naming
both, raised by every command but ``slmdeploy plugins``, which lists them so that the user can choose.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import pluggy

from slmdeploy.config.options import fields_of
from slmdeploy.errors import PluginError, brief, filesystem_error
from slmdeploy.host.development import development_version
from slmdeploy.stages import STAGE_BASES, STAGE_ORDER, Stage

SHIPPED_DISTRIBUTION = "slmdeploy"
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
    shipped: bool = False
    """Registered by a plugin of the distribution ``slmdeploy`` itself."""


@attrs.frozen
class Shadowing:
    """A stage implementation used in place of another one of the same name."""

    stage: str
    used: Provided
    shadowed: Provided

    def notice(self) -> str:
        return (
            f"the {self.stage} implementation {self.used.cls.PLUGIN_NAME!r} of plugin {self.used.plugin!r} "
            f"({self.used.origin}) shadows the shipped one of {self.shadowed.plugin!r} ({self.shadowed.origin}); "
            f"block {self.used.plugin} (SLMDEPLOY_DISABLE_PLUGINS={self.used.plugin}) to use the shipped one"
        )


@attrs.frozen
class Clash:
    """Two or more third-party implementations of one name for one stage: none of them can be chosen."""

    stage: str
    providers: tuple[Provided, ...]

    def error(self) -> PluginError:
        named = " and ".join(f"{provided.plugin!r} ({provided.origin})" for provided in self.providers)
        blocks = " or ".join(f"SLMDEPLOY_DISABLE_PLUGINS={provided.plugin}" for provided in self.providers)
        count = "two" if len(self.providers) == 2 else str(len(self.providers))
        name = self.providers[0].cls.PLUGIN_NAME
        return PluginError(
            f"{count} plugins provide a {self.stage} implementation named {name!r}: {named}",
            fix=f"Uninstall one of them, or block one ({blocks}, or --disable-plugin <name>). "
            "`slmdeploy plugins` lists them.",
        )


class Registry:
    """Every stage implementation the loaded plugins provide, by stage and `PLUGIN_NAME`.

    A clash (two third-party implementations of one name) raises its error, unless `allow_clashes` (for listing
    plugins): then `clashes` holds them and neither implementation can be selected."""

    def __init__(self, manager: pluggy.PluginManager, allow_clashes: bool = False) -> None:
        self.manager = manager
        self.provided: dict[str, dict[str, list[Provided]]] = {stage: {} for stage in STAGE_ORDER}
        """Every registration, by stage and name, including those shadowed or clashing."""
        for stage in STAGE_ORDER:
            for impl in getattr(manager.hook, REGISTRATION_HOOKS[stage]).get_hookimpls():
                # Called one implementation at a time to know who registered what; traced like a hook call.
                manager.trace.root.get("hook")(f"{REGISTRATION_HOOKS[stage]} of {impl.plugin_name!r}")
                for cls in _call(impl) or ():
                    self._add(stage, cls, impl.plugin_name, impl.plugin)
        self.stages: dict[str, dict[str, Provided]] = {stage: {} for stage in STAGE_ORDER}
        self.shadowings: list[Shadowing] = []
        self.clashes: list[Clash] = []
        for stage, by_name in self.provided.items():
            for name, providers in by_name.items():
                self._choose(stage, name, providers)
        if self.clashes and not allow_clashes:
            raise self.clashes[0].error()

    def _choose(self, stage: str, name: str, providers: list[Provided]) -> None:
        """The implementation `name` selects: the only one, or the third-party one over the shipped one."""
        third_party = [provided for provided in providers if not provided.shipped]
        candidates = third_party or providers
        if len(candidates) > 1:
            self.clashes.append(Clash(stage, tuple(candidates)))
            return
        self.stages[stage][name] = candidates[0]
        self.shadowings += [Shadowing(stage, candidates[0], other) for other in providers if other is not candidates[0]]

    def _add(self, stage: str, cls: Any, plugin_name: str, plugin: Any) -> None:
        base = STAGE_BASES[stage]
        if not (isinstance(cls, type) and issubclass(cls, base)) or not getattr(cls, "PLUGIN_NAME", None):
            raise PluginError(
                f"plugin {plugin_name!r} registered {cls!r} for [{stage}], which is not a "
                f"{base.__name__} subclass with a PLUGIN_NAME",
                fix=f"Return subclasses of slmdeploy.plugin.{base.__name__} from the hook.",
            )
        version, origin = plugin_version(self.manager, plugin_name, plugin)
        shipped = _distribution(self.manager, plugin) == SHIPPED_DISTRIBUTION
        try:
            fields_of(cls.Options)
        except Exception as error:
            raise filesystem_error(error) or PluginError(
                f"plugin {plugin_name!r} ({origin}): the Options of {cls.__name__} are not a valid "
                f"attrs class with resolvable annotations: {brief(error)}",
                fix="Decorate Options with @attrs.define and import every type its annotations name.",
            ) from error
        provided = Provided(cls, plugin_name, version, origin, shipped)
        self.provided[stage].setdefault(cls.PLUGIN_NAME, []).append(provided)

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


def _distribution(manager: pluggy.PluginManager, plugin: Any) -> str | None:
    """The normalized name of the distribution that installed `plugin` (None: a local or in-process plugin)."""
    for registered, dist in manager.list_plugin_distinfo():
        if registered is plugin:
            return re.sub(r"[-_.]+", "-", str(dist.project_name)).lower()
    return None


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
