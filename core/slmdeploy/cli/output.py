"""How commands print: an error as a wrapped paragraph, rows as aligned columns."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

import click


def report_error(error: BaseException | str) -> None:
    """The error's first line as a wrapped paragraph; the lines after it (a log's end, a table) as they are."""
    paragraph, newline, rest = f"error: {error}".partition("\n")
    text = textwrap.fill(
        paragraph,
        width=max(60, min(shutil.get_terminal_size().columns, 110)),
        break_long_words=False,
        break_on_hyphens=False,
    )
    click.echo(text + newline + rest, err=True)


def echo_columns(rows: Sequence[Sequence[str]]) -> None:
    """Print rows with each column as wide as its widest cell."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
