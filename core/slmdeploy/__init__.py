"""slmdeploy: build, quantize, template, evaluate and register fine-tuned small language models.

Plugin authors import from `slmdeploy.plugin`; the hooks are documented in `slmdeploy.hookspecs`.
"""

from __future__ import annotations

__version__ = "0.1.0"
