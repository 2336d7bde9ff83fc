"""`pushrules bench`: the generated runtime against the library engines, in one run."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


@click.command()
@click.option("--quick", is_flag=True, help="Small populations: a few seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def bench(quick: bool, as_json: bool) -> None:
    """Events per second, bytes per session, replay and scaling of the three engines."""
    from pushrules.benchmarks.harness import run
    from pushrules.benchmarks.report import text

    def progress(message: str) -> None:
        click.echo(f"bench: {message}", err=True)

    result: dict[str, Any] = run(quick=quick, progress=progress)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(text(result))
    sys.stdout.flush()
