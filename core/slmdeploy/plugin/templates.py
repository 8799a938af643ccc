"""Writing a template family: the class most families subclass, and what it reads a tokenizer with.

`ChatTemplateFamily` is a `slmdeploy.plugin.TemplateFamily` whose conversations are turns written one after another:
set its attributes (``TURN``, ``GENERATION_PROMPT``, ``END_TOKENS`` ...), and its `run` checks the format against the
tokenizer's own chat template on `PARITY_CONVERSATIONS` and writes the package. `PromptTemplate` is what its
`prompt_template` returns (Foundry Local's ``PromptTemplate``); `FamilyOptions` is its ``[template]`` table, to
subclass for more keys. `TokenizerFiles` reads ``tokenizer.json`` and ``tokenizer_config.json`` without transformers;
`render_chat_template` renders a jinja chat template as transformers does. ``docs/plugins/templates.md`` has a
complete family.
"""

from __future__ import annotations

from slmdeploy.model.template_parity import PARITY_CONVERSATIONS
from slmdeploy.model.templating import ChatTemplateFamily, FamilyOptions, PromptTemplate
from slmdeploy.model.tokenizer import TokenizerFiles, render_chat_template

__all__ = [
    "PARITY_CONVERSATIONS",
    "ChatTemplateFamily",
    "FamilyOptions",
    "PromptTemplate",
    "TokenizerFiles",
    "render_chat_template",
]
