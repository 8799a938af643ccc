"""``[register] plugin = "foundry"``: place, register and smoke-test a package in Foundry Local."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from slmdeploy.plugin import ConfigError, DeployPackage, Leftover, Registrar, Registration, option
from slmdeploy.plugin.worker import run_in_worker

CACHE_ENV = "SLMDEPLOY_FOUNDRY_CACHE"
DEFAULT_CACHE = Path("~/.foundry/cache/models")
MARKER = ".slmdeploy.json"
CATALOG_FILE = "foundry.local.modelinfo.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@attrs.define
class FoundryOptions:
    cache_dir: str | None = option(
        None, help=f"Foundry Local's model cache; default: ${CACHE_ENV}, else {DEFAULT_CACHE} (Foundry's own)"
    )
    smoke_prompt: str = option("What is the capital of France?", help="asked after registering; no answer fails")
    smoke_max_tokens: int = option(64, help="the smoke answer's length limit", validator=attrs.validators.ge(1))


def cache_dir(options: FoundryOptions, project_dir: Path) -> Path:
    """The project file's cache_dir, else the environment's, else Foundry Local's default."""
    configured = options.cache_dir or os.environ.get(CACHE_ENV) or str(DEFAULT_CACHE)
    return (project_dir / Path(configured).expanduser()).resolve()


def cache_setting(options: FoundryOptions) -> str:
    """Where the cache folder was chosen, for errors: the key, the variable, or Foundry's default."""
    if options.cache_dir:
        return "[register] cache_dir"
    return CACHE_ENV if os.environ.get(CACHE_ENV) else "Foundry Local's default cache"


def check_cache(cache: Path, setting: str) -> None:
    """The cache must be a folder this user can write (or create): checked before anything is placed in it."""
    existing = cache
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    choose = f"or set [register] cache_dir (or ${CACHE_ENV}) to a folder you can write"
    if not existing.is_dir():
        raise ConfigError(
            f"Foundry Local's cache {cache} is not a folder: {existing} is a file",
            where=setting,
            fix=f"Move that file away, {choose}.",
        )
    for folder in (existing, existing / "custom"):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(
                f"no permission to write Foundry Local's cache {folder} (or it is on a read-only disk)",
                where=setting,
                fix=f"Give this user write access to it (ls -ld {folder} shows its owner), {choose}.",
            )


def check_name(name: str) -> None:
    if not NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{name!r} is not a name Foundry Local accepts for a model",
            where="[project] name",
            fix="Use letters, digits, '.', '_' and '-', starting with a letter or digit, without '..'.",
        )


class FoundryRegistrar(Registrar):
    PLUGIN_NAME = "foundry"
    Options = FoundryOptions

    def run(self, artifact: DeployPackage, output_dir: Path) -> Registration:
        name = artifact.model_name
        check_name(name)
        cache = cache_dir(self.options, self.context.project_dir)
        check_cache(cache, cache_setting(self.options))
        task = {
            "action": "register",
            "package": str(artifact.path),
            "cache": str(cache),
            "name": name,
            "model_id": f"{name}:{self.context.project_version}",
            "project": str(self.context.project_dir),
            "prompt": self.options.smoke_prompt,
            "max_tokens": self.options.smoke_max_tokens,
        }
        result = run_in_worker("slmdeploy_foundry.placement:register", task, self.context, "register")
        (output_dir / "registration.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        self.context.log(f"registered {result['model_id']}; answer: {result['answer'][:60]!r}")
        return Registration(
            Path(result["folder"]),
            registry="foundry",
            model_id=result["model_id"],
            details={
                key: result[key] for key in ("cache", "prompt", "answer", "finish_reason", "usage", "seconds", "token")
            },
        )

    def is_current(self, artifact: Registration) -> bool:
        """Still registered from the same cache, and the folder still holds this registration's package (its
        marker's token): checked from the files, without starting Foundry."""
        cache = Path(artifact.details.get("cache", ""))
        if cache != cache_dir(self.options, self.context.project_dir):
            return False
        try:
            owner = json.loads((artifact.path / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return owner.get("token") == artifact.details.get("token") and artifact.model_id in _catalog_ids(cache)

    def leftovers(self, recorded: Sequence[Registration]) -> list[Leftover]:
        """Folders of Foundry Local's cache whose marker names this project but no recorded registration: a
        registration cut short after the package was copied (registered in the catalog or not), and the staging
        folders of one cut short while copying."""
        cache = cache_dir(self.options, self.context.project_dir)
        tokens = {registration.details.get("token") for registration in recorded}
        registered = _catalog_ids(cache)
        found = []
        for folder in sorted(path for path in (cache / "custom").glob("*") if path.is_dir()):
            try:
                owner = json.loads((folder / MARKER).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(owner, dict) or owner.get("project") != str(self.context.project_dir):
                continue
            model_id = str(owner.get("model_id", folder.name))
            if folder.name.startswith(".slmdeploy-"):
                state, fix = "a staging copy left by a registration that was cut short", f"Delete {folder}."
            elif owner.get("token") in tokens:
                continue
            else:
                listed = "registered in Foundry Local's catalog" if model_id in registered else "never registered"
                state = f"copied into Foundry Local's cache, {listed}, not recorded: a registration was cut short"
                fix = f"Run `slmdeploy build` to register it again (it replaces the folder), or delete {folder}."
            found.append(Leftover(model_id, folder, state, fix))
        return found

    def unregister(self, artifact: Registration) -> str:

        task = {
            "action": "unregister",
            "cache": artifact.details["cache"],
            "folder": str(artifact.path),
            "model_id": artifact.model_id,
            "project": str(self.context.project_dir),
        }
        result = run_in_worker("slmdeploy_foundry.placement:unregister", task, self.context, "unregister")
        return str(result["removed"])


def _catalog_ids(cache: Path) -> set[str]:
    """The model ids of Foundry Local's local catalog file (none when it is missing or unreadable)."""
    try:
        models = json.loads((cache / CATALOG_FILE).read_text(encoding="utf-8")).get("models", [])
        return {str(model["model_info"]["id"]) for model in models}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
