"""Terminal or pipe: rich output that is complete when stdout is not a terminal (no truncated cells)."""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 100_000  # wide enough that no cell is ever cut or wrapped; tables only take what they need


def stdout_console() -> Console:
    """A console for stdout: the terminal's width on a terminal; when piped, one line per table row with
    every cell whole (rich would otherwise fit tables into 80 columns and cut names with '…')."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPE_WIDTH, no_color=True, highlight=False, soft_wrap=False)
