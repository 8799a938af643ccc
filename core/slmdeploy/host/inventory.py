"""`slmdeploy plugins`: what is loaded, from where, providing which stages and keys."""

from __future__ import annotations

from typing import Any

import pluggy

from slmdeploy.config.options import describe_type, fields_of
from slmdeploy.host.registry import Registry, plugin_version


def describe_plugins(manager: pluggy.PluginManager, with_options: bool) -> list[dict[str, Any]]:
    registry = Registry(manager)
    listing: list[dict[str, Any]] = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:  # blocked
            continue
        version, origin = plugin_version(manager, name, plugin)
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or ())
        stages = [
            _stage(stage, provided.cls, with_options)
            for stage, by_name in registry.stages.items()
            for provided in by_name.values()
            if provided.plugin == name
        ]
        listing.append({"name": name, "version": version, "from": origin, "hooks": hooks, "provides": stages})
    blocked = [name for name, plugin in manager.list_name_plugin() if plugin is None]
    listing.extend({"name": name, "blocked": True} for name in blocked)
    return listing


def _stage(stage: str, cls: type, with_options: bool) -> dict[str, Any]:
    described: dict[str, Any] = {"stage": stage, "name": cls.PLUGIN_NAME}  # type: ignore[attr-defined]
    if with_options:
        described["options"] = [
            {
                "key": field.name,
                "type": describe_type(field.type),
                "default": _default(field),
                "help": field.metadata.get("help", ""),
                "variants": bool(field.metadata.get("variants")),
            }
            for field in fields_of(cls.Options)  # type: ignore[attr-defined]
        ]
    return described


def _default(field: Any) -> Any:
    import attrs

    if field.default is attrs.NOTHING:
        return "(required)"
    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        return field.default.factory()
    return field.default


def render_plugins(listing: list[dict[str, Any]]) -> str:
    lines = []
    for plugin in listing:
        if plugin.get("blocked"):
            lines.append(f"{plugin['name']} (blocked)")
            continue
        lines.append(f"{plugin['name']} {plugin['version']}  from {plugin['from']}")
        lines.append(f"    hooks: {', '.join(plugin['hooks']) or '-'}")
        for stage in plugin["provides"]:
            lines.append(f"    {stage['stage']}: {stage['name']}")
            for option in stage.get("options", []):
                lines.append(f"        {option['key']} = {option['default']!r}  ({option['type']}) {option['help']}")
    return "\n".join(lines)
