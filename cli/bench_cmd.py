"""`pushrules bench`: the generated runtime against the library engines, in one run;
`pushrules bench --serve`: the sidecar end to end over a real Prosody."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


@click.command()
@click.option("--quick", is_flag=True,
              help="Small populations: a few seconds (with --serve: under two minutes).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--serve", "serve", is_flag=True,
              help="Measure `pushrules serve` end to end: a real Prosody, a recording app "
                   "server, the memory, SQLite and Redis stores, against the raw ceiling.")
def bench(quick: bool, as_json: bool, serve: bool) -> None:
    """Events per second, bytes per session, replay and scaling of the three engines; with
    --serve, the sidecar's events/s, pushes/s, latency and memory under overload."""

    def progress(message: str) -> None:
        click.echo(f"bench: {message}", err=True)

    result: dict[str, Any]
    if serve:
        from pushrules.benchmarks import serve as serve_bench

        try:
            result = serve_bench.run(quick=quick, progress=progress)
        except (FileNotFoundError, RuntimeError) as exc:  # e.g. no prosody on PATH
            raise click.ClickException(f"bench --serve: {exc}") from None
        render = serve_bench.text
    else:
        from pushrules.benchmarks.harness import run
        from pushrules.benchmarks.report import text

        result = run(quick=quick, progress=progress)
        render = text
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(render(result))
    sys.stdout.flush()
