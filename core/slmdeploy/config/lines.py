"""Where each key of a project file is written: TOML key paths mapped to line numbers, for error messages."""

from __future__ import annotations

import re


class KeyLines:
    """Maps TOML key paths (``quantize.precision``) to their line numbers in the file.

    tomlkit keeps comments and layout but not positions, so the file is scanned once for table headers
    and ``key =`` lines. A key path that is not written out maps to its nearest written parent.
    """

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(
        r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
    )

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        self.repeated: dict[str, int] = {}
        """Key paths written more than once, with the line of their second appearance."""
        table = ""
        in_multiline = False
        for number, line in enumerate(text.splitlines(), start=1):
            if line.count('"""') % 2 or line.count("'''") % 2:
                in_multiline = not in_multiline
                if not in_multiline:
                    continue
            if in_multiline:
                continue
            if header := self._HEADER.match(line):
                table = _dotted(header.group(1))
                self._note(table, number)
            elif key := self._KEY.match(line):
                self._note(f"{table}.{_dotted(key.group(1))}" if table else _dotted(key.group(1)), number)

    def _note(self, path: str, number: int) -> None:
        if path in self._lines:
            self.repeated.setdefault(path, number)
        self._lines.setdefault(path, number)

    def line_of(self, key: str) -> int | None:
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key.rpartition(".")[0]
        return None


def _dotted(key: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in re.split(r"\.(?=(?:[^\"']*[\"'][^\"']*[\"'])*[^\"']*$)", key))
