"""What every cdnctl command prints with: the consoles, exit codes, the output format, and
an error that ends a command. Light on imports: commands that need no compiler (drain)
start with this alone."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_INVALID = 1
EXIT_FAILED = 1  # an edge or an apply failed
EXIT_USAGE = 2


class Format(StrEnum):
    text = "text"
    json = "json"


FormatOpt = Annotated[Format, typer.Option("--format", help="text for people, json for CI.")]


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print `message` as an error; the exit to raise."""
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)
