from __future__ import annotations

from slmdeploy.cli import main

main()
