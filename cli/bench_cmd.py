"""`pushrules bench`: the generated runtime against the library engines, in one run;
`pushrules bench --serve`: the sidecar end to end over a real Prosody."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click


@click.command()
@click.option("--quick", is_flag=True,
              help="Small populations: a few seconds (with --serve: under two minutes).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--serve", "serve", is_flag=True,
              help="Measure `pushrules serve` end to end: a real Prosody, a recording app "
                   "server, the memory, SQLite and Redis stores, against the raw ceiling.")
@click.option("--simday", is_flag=True,
              help="A simulated day of traffic: pushes per device per hour with burst_window "
                   "0, 1, 5 and 20 s against Prosody's 1 s batching, and app-server limit "
                   "violations, as a Markdown table.")
@click.option("--seed", type=int, help="With --simday: the seed of the simulated day "
                                      "(default 14).")
@click.option("--plot", "plot", type=click.Path(dir_okay=False),
              help="With --simday: also write the plot (PNG) to this file.")
def bench(quick: bool, as_json: bool, serve: bool, simday: bool, seed: int | None,
          plot: str | None) -> None:
    """Events per second, bytes per session, replay and scaling of the three engines; with
    --serve, the sidecar's events/s, pushes/s, latency and memory under overload; with
    --simday, a simulated day's pushes per device against app-server limits."""

    def progress(message: str) -> None:
        click.echo(f"bench: {message}", err=True)

    if simday and serve:
        raise click.UsageError("--simday and --serve are separate benchmarks: give one")
    if not simday and (seed is not None or plot is not None):
        raise click.UsageError("--seed and --plot go with --simday")
    if simday:
        _simday(quick, as_json, 14 if seed is None else seed, plot, progress)
        return
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


def _simday(quick: bool, as_json: bool, seed: int, plot: str | None,
            progress: Callable[[str], None]) -> None:
    from pushrules.benchmarks import simday

    if plot is not None and not os.path.isdir(os.path.dirname(os.path.abspath(plot))):
        raise click.BadParameter(f"the folder of {plot} does not exist", param_hint="--plot")
    result = simday.run(quick=quick, seed=seed, progress=progress)
    if plot is not None:
        try:
            simday.write_plot(result, plot)
        except ImportError as exc:
            raise click.ClickException(f"bench --simday --plot needs matplotlib ({exc}): "
                                       "pip install 'pushrules[bench]'") from None
        except OSError as exc:
            raise click.ClickException(f"bench --simday: cannot write the plot {plot}: "
                                       f"{exc.strerror or exc}") from None
        progress(f"simday: plot written to {plot}")
    name = None if plot is None else os.path.basename(plot)
    click.echo(json.dumps(result, indent=2) if as_json else simday.text(result, name))
