"""`slmdeploy plugins`: what is loaded, from where, providing which stages and keys."""

from __future__ import annotations

from typing import Any

from slmdeploy.config.options import describe_type, fields_of
from slmdeploy.host.registry import Provided, Registry, plugin_version


def describe_plugins(registry: Registry, with_options: bool) -> list[dict[str, Any]]:
    """Every loaded plugin, its hooks and the stage implementations it provides, each marked when it shadows,
    is shadowed by, or clashes with another of its name. `registry` allows clashes (they are listed, not raised)."""
    manager = registry.manager
    listing: list[dict[str, Any]] = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:  # blocked
            continue
        version, origin = plugin_version(manager, name, plugin)
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or ())
        stages = [
            {**_stage(stage, provided.cls, with_options), **_standing(registry, stage, provided)}
            for stage, by_name in registry.provided.items()
            for providers in by_name.values()
            for provided in providers
            if provided.plugin == name
        ]
        listing.append({"name": name, "version": version, "from": origin, "hooks": hooks, "provides": stages})
    blocked = [name for name, plugin in manager.list_name_plugin() if plugin is None]
    listing.extend({"name": name, "blocked": True} for name in blocked)
    return listing


def registry_notices(registry: Registry) -> list[str]:
    """One line per shadowed implementation and per clash, for the commands to print on stderr."""
    notices = [f"notice: {shadowing.notice()}." for shadowing in registry.shadowings]
    return notices + [f"error: {clash.error()}" for clash in registry.clashes]


def _standing(registry: Registry, stage: str, provided: Provided) -> dict[str, str]:
    """Whether this implementation shadows another of its name, is shadowed, or clashes: whom, by plugin name."""
    for shadowing in registry.shadowings:
        if shadowing.stage == stage and shadowing.used is provided:
            return {"shadows": shadowing.shadowed.plugin}
        if shadowing.stage == stage and shadowing.shadowed is provided:
            return {"shadowed_by": shadowing.used.plugin}
    for clash in registry.clashes:
        if clash.stage == stage and provided in clash.providers:
            return {"clashes_with": ", ".join(other.plugin for other in clash.providers if other is not provided)}
    return {}


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
            lines.append(f"    {stage['stage']}: {stage['name']}{_standing_text(stage)}")
            for option in stage.get("options", []):
                lines.append(f"        {option['key']} = {option['default']!r}  ({option['type']}) {option['help']}")
    return "\n".join(lines)


def _standing_text(stage: dict[str, Any]) -> str:
    if "shadows" in stage:
        return f"  (shadows the shipped one of {stage['shadows']})"
    if "shadowed_by" in stage:
        return f"  (shadowed by {stage['shadowed_by']}: not used)"
    if "clashes_with" in stage:
        return f"  (clashes with {stage['clashes_with']}: neither can be used)"
    return ""
