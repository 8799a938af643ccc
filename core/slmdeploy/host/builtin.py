"""Hook implementations of the core itself: the fallbacks that turn 'nobody answered' into an error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from slmdeploy.errors import ConfigError

if TYPE_CHECKING:
    from slmdeploy.artifacts import ModelInfo

hookimpl = pluggy.HookimplMarker("slmdeploy")


@hookimpl(trylast=True)
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    architectures = ", ".join(model.architectures) or "none"
    raise ConfigError(
        f"no installed template family claims this model (model_type {model.model_type!r}, "
        f"architectures {architectures})",
        where="[template] family",
        fix='Set [template] family = "<name>" to one listed by `slmdeploy plugins`, or install a plugin for '
        "this model family.",
    )
