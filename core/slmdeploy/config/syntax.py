"""Reading the project file's text, and saying what is wrong with it when it is not UTF-8 or not TOML; reading the
text files a project names (a plugin's texts, prompts, calibration), with the same care."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import tomlkit.exceptions

from slmdeploy.errors import ConfigError

_SYNTAX_FIX = "Fix that line: TOML strings need quotes, and tables are written [name]."
_TWICE_FIX = "Keep one of them: in TOML a key appears once in its table, and a table once in the file."


def read_project_text(file: Path) -> str:
    """The project file's text; an unreadable or non-UTF-8 file is a `ConfigError` naming where it breaks."""
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"the project file cannot be read ({error.strerror})",
            where=str(file),
            fix="Make it readable for this user (chmod u+r), or pass another project folder with -C.",
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError(
            f"the project file is not UTF-8 text: byte 0x{data[error.start]:02x} at line {line}, column {column}",
            where=f"{file.name}:{line}",
            fix="Save the file as UTF-8 (TOML files are UTF-8), or retype that character.",
        ) from None


def read_text_file(file: Path, key: str, fix: str = "Name a plain text file saved as UTF-8.") -> str:
    """A file the project names as text: readable UTF-8 with no NUL bytes, or a `ConfigError` naming the file and
    `key` (never the file's content); `fix` says what the file should be."""
    try:
        data = file.read_bytes()
        text = data.decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{file} cannot be read ({error.strerror})", where=key, fix="Make it readable.") from None
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"{file} is not UTF-8 text (byte 0x{data[error.start]:02x} at line {line})", where=key, fix=fix
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{file} is not text: it holds NUL bytes (a binary file?)", where=key, fix=fix)
    return text


def syntax_error(
    file: Path, text: str, repeated: Mapping[str, int], error: tomlkit.exceptions.TOMLKitError
) -> ConfigError:
    """One paragraph for tomlkit's error: a key or table written twice, an unclosed string, or other syntax."""
    twice = re.match(r'Key "(.+)" already exists', str(error))
    if twice:
        return _written_twice(file, twice.group(1), repeated, error)
    line, column = getattr(error, "line", None), getattr(error, "col", None)
    where = f"{file.name}:{line}:{column}" if line else file.name
    if isinstance(error, tomlkit.exceptions.InvalidControlChar) and _at_line_end(text, line, column):
        return ConfigError(
            "TOML syntax error: a string is not closed on this line",
            where=where,
            fix='Close it with the quote it opened with; text over several lines goes between triple quotes """.',
        )
    reason = re.sub(r"\s+at line \d+ col \d+$", "", str(error))
    return ConfigError(f"TOML syntax error: {reason.rstrip('.')}", where=where, fix=_SYNTAX_FIX)


def _written_twice(
    file: Path, name: str, repeated: Mapping[str, int], error: tomlkit.exceptions.TOMLKitError
) -> ConfigError:
    paths = [path for path in repeated if path == name or path.endswith(f".{name}")]
    line = repeated[paths[0]] if paths else getattr(error, "line", None)
    where = f"{file.name}:{line}" if line else file.name
    if paths and "." in paths[0]:
        table, _, key = paths[0].rpartition(".")
        return ConfigError(f"the key {key!r} is written twice in [{table}]", where=where, fix=_TWICE_FIX)
    if paths and isinstance(error, tomlkit.exceptions.ParseError):
        return ConfigError(f"the table [{paths[0]}] is written twice", where=where, fix=_TWICE_FIX)
    return ConfigError(f"{name!r} is written twice", where=where, fix=_TWICE_FIX)


def _at_line_end(text: str, line: int | None, column: int | None) -> bool:
    lines = text.splitlines()
    return line is not None and column is not None and 0 < line <= len(lines) and column >= len(lines[line - 1])
