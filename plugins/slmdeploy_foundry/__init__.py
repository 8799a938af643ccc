"""slmdeploy's Foundry Local plugin: ``[register] plugin = "foundry"``, and ``slmdeploy run`` through Foundry Local.

The registrar places a package in Foundry Local's model cache (``<cache>/custom/<name>/``), registers it in the
local catalog with the SDK (``<name>:<version>``, task ``chat-completion``), loads it and asks it a question;
the build fails if no answer comes back. The SDK is used in a child process and only through the local
catalog, which never touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slmdeploy.plugin import DeployedModel, ProjectOptions, hookimpl


@hookimpl
def slmdeploy_register_registrars() -> list[type[Any]]:
    from slmdeploy_foundry.registrar import FoundryRegistrar

    return [FoundryRegistrar]


@hookimpl
def slmdeploy_check_project(options: ProjectOptions) -> None:
    """An unwritable cache (read-only disk, no permission, a file in the way) is reported before anything is built."""
    from slmdeploy_foundry.registrar import CACHE_ENV, DEFAULT_CACHE, check_cache

    register = options.table("register")
    if register is None or register.name != "foundry":
        return
    project = options.project
    configured = register.options.get("cache_dir")
    if isinstance(configured, str) and configured:
        where = f"{project.locate('register.cache_dir')} [register] cache_dir"
    else:
        configured, where = os.environ.get(CACHE_ENV) or str(DEFAULT_CACHE), CACHE_ENV
    check_cache((project.root / Path(configured).expanduser()).resolve(), where)


@hookimpl
def slmdeploy_chat_backend(model: DeployedModel) -> Any:
    from slmdeploy_foundry.chat import FoundryChat, sdk_installed

    registration = model.registration or {}
    if registration.get("registry") != "foundry" or not sdk_installed():
        return None
    return FoundryChat(registration)
