"""`pushrules check`: exhaustive model checking of a bounded world, and mutation testing."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import click

from pushrules.checker.bounded import (
    FLAGS,
    TIME_BOUNDS,
    TIME_MUTANT_BOUNDS,
    TIME_V2_BOUNDS,
    TIME_V2_MUTANT_BOUNDS,
    V2_BOUNDS,
    V2_MUTANT_BOUNDS,
    Bounds,
)
from pushrules.checker.progress import Progress
from pushrules.generated.events import EVENT_CLASSES

MUTANT_BOUNDS = Bounds(sessions=2, push_sessions=2, orphans=0, stanzas=3, max_errors=2,
                       max_devices=1)
"""The bound mutants run at: every row of both tables is taken, in a few seconds."""


def _bound_options(fn):  # type: ignore[no-untyped-def]
    for f in reversed(fields(Bounds)):
        if f.name in FLAGS:
            continue
        fn = click.option(f"--{f.name.replace('_', '-')}", f.name, type=click.IntRange(0),
                          default=None,
                          help=f"Bound (default {f.default}; "
                               f"{getattr(MUTANT_BOUNDS, f.name)} with --mutants; with --v2 "
                               f"{getattr(V2_BOUNDS, f.name)}, and "
                               f"{getattr(V2_MUTANT_BOUNDS, f.name)} with --mutants).")(fn)
    return fn


@click.command()
@_bound_options
@click.option("--v2", is_flag=True, default=None,
              help="The contract's version-2 world: a group chat (a message that is the "
                   "room's echo or not by the nick of the setting, a mention), a call (propose, "
                   "then retract; the user's own reject and call, archived), CSI changes, chat "
                   "settings for the room and remote disable, at its own default bound "
                   "(checker/PROPERTIES.md). With --mutants: the version-2 mutants.")
@click.option("--expiry", is_flag=True, default=None,
              help="Also explore the model's orphan expiry: its timer event expire for every "
                   "orphaned registration at any time (orphaned -> disabled, reason expired); "
                   "the timer rows must be taken and, with --mutants, are mutated too.")
@click.option("--time", is_flag=True, default=None,
              help="The time-based rules (burst_window, orphan_ttl, retry_after on): the "
                   "clock's events (a held push, an expiry or a retry coming due; a burst window "
                   "ending) raised at any time for a registration whose due time is ahead, at "
                   "its own default bound (checker/PROPERTIES.md, \"Time\"); implies --expiry. "
                   "With --v2: the version-2 time bound. With --mutants: the mutants of the "
                   "time rows.")
@click.option("--mutants", "run_mutants", is_flag=True,
              help="Mutate the model IR and report which mutants some property kills.")
@click.option("--mutant", "only", metavar="ID",
              help="With --mutants: run only the mutants whose id contains ID, printing each "
                   "killed mutant's counterexample.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--trace-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write each counterexample to DIR/<property>.jsonl.")
@click.option("--reference", is_flag=True,
              help="Explore with the reference explorer (explore.py: the model run once per "
                   "model state and event; exact but about 20x slower), to cross-check.")
@click.option("--progress", "show_progress", is_flag=True,
              help="Report progress on stderr (states so far, rate; mutants done and ETA) "
                   "even when stderr is not a terminal (on a terminal it is reported anyway).")
def check(run_mutants: bool, only: str | None, as_json: bool, trace_dir: Path | None,
          reference: bool, show_progress: bool, **bounds: int | None) -> None:
    """Explore every interleaving of a bounded world over the generated tables and check the
    properties (see checker/PROPERTIES.md). Exit 1 on any failure; a violated property prints
    its shortest counterexample as a trace for `pushrules replay --strict`."""
    if bounds.get("time") and bounds.get("v2"):
        base = TIME_V2_MUTANT_BOUNDS if run_mutants else TIME_V2_BOUNDS
    elif bounds.get("time"):
        base = TIME_MUTANT_BOUNDS if run_mutants else TIME_BOUNDS
    elif bounds.get("v2"):
        base = V2_MUTANT_BOUNDS if run_mutants else V2_BOUNDS
    else:
        base = MUTANT_BOUNDS if run_mutants else Bounds()
    chosen: dict[str, int | bool] = {k: v for k, v in bounds.items() if v is not None}
    try:
        limits = Bounds(**{**{f.name: getattr(base, f.name) for f in fields(Bounds)}, **chosen})
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if limits.v2 and "message/bare/groupchat" not in EVENT_CLASSES:
        raise click.BadParameter("the model has no contract-v2 events yet", param_hint="--v2")
    if (limits.v2 or limits.time) and reference:
        raise click.BadParameter("the reference explorer does not explore v2 or time yet",
                                 param_hint="--reference")
    progress = show_progress or sys.stderr.isatty()
    if run_mutants:
        sys.exit(_mutants(limits, only, as_json, progress))
    sys.exit(_check(limits, as_json, trace_dir, reference, progress))


def _check(limits: Bounds, as_json: bool, trace_dir: Path | None, reference: bool,
           progress: bool = False) -> int:
    if reference:
        from pushrules.checker.explore import Explorer as explorer_cls
    else:
        from pushrules.checker.compiled import CompiledExplorer as explorer_cls

    explorer = explorer_cls(limits)
    if progress:
        explorer.progress = Progress(sys.stderr)
    result = explorer.run()
    if explorer.progress is not None:
        explorer.progress.close()
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        for name, violation in result.violations.items():
            if violation.trace:
                (trace_dir / f"{name}.jsonl").write_text(violation.as_trace(explorer.world))
    if as_json:
        click.echo(json.dumps(result.summary()))
    else:
        rate = result.states / result.seconds if result.seconds else 0.0
        click.echo(f"bounds: {limits.describe()}")
        click.echo(f"{result.states:,} states, {result.transitions:,} transitions, "
                   f"{result.seconds:.1f} s ({rate:,.0f} states/s)")
        computed = getattr(explorer, "computed", None)
        if computed is not None:
            click.echo(f"{computed:,} distinct steps run through the model's tables "
                       "(compiled explorer; the rest replayed from them)")
        for name, verdict in result.properties.items():
            click.echo(f"  {verdict:4}  {name}")
        if result.left_to_v1:
            click.echo(f"{len(result.left_to_v1)} version-1 rows are not taken at this v2 "
                       "bound (it has no v1 stanza; the v1 default bound takes them): "
                       + "; ".join(result.left_to_v1))
        if result.left_to_other:
            timed = result.other_time_rows
            click.echo(f"{len(result.left_to_other) - len(timed)} rows of the other rules are "
                       "not taken at this time bound (the v1 and v2 default bounds take them)"
                       + (f"; {len(timed)} rows of the time-based rules are left to the other "
                          "time bound (--time " + ("without" if limits.v2 else "with")
                          + " --v2): " + "; ".join(timed) if timed else ""))
        if result.left_to_time:
            click.echo(f"{len(result.left_to_time)} rows of the time-based rules are not "
                       "explored at this bound (the time bounds take them: --time, with and "
                       "without --v2)")
    for violation in result.violations.values():
        out = sys.stderr if as_json else sys.stdout
        out.write(f"\n# counterexample for {violation.prop}\n")
        if violation.trace:
            out.write(violation.as_trace(explorer.world))
        else:
            out.write(f"# {violation.detail}\n")
    return 0 if result.ok else 1


def _mutants(limits: Bounds, only: str | None, as_json: bool, progress: bool = False) -> int:
    from pushrules.checker.mutants import run_mutant, selected, skipped_v2, time_mutants

    # with --v2 the version-2 mutants, at the v2 bound (the others: --mutants without --v2);
    # with --time those of the time-based rules (on v2 events with --v2)
    chosen = [m for m in selected(limits) if only is None or only in m.id]
    if not chosen:
        raise click.BadParameter(f"no mutant id contains {only!r}", param_hint="--mutant")
    killed = 0
    survivors: list[dict[str, str | None]] = []
    report = Progress(sys.stderr, "mutants") if progress else None
    for done, mutant in enumerate(chosen):
        if report is not None:
            report.update(done, len(chosen), f"{killed} killed")
        outcome, result, explorer = run_mutant(mutant, limits)
        if outcome.killed_by:
            killed += 1
        else:
            survivors.append({"id": mutant.id, "equivalent": outcome.equivalent})
        if not as_json:
            verdict = ("killed by " + ", ".join(outcome.killed_by) if outcome.killed_by
                       else "EQUIVALENT: " + outcome.equivalent if outcome.equivalent
                       else "SURVIVED")
            click.echo(f"{mutant.id}: {verdict}")
            if only is not None and outcome.killed_by:
                violation = result.violations[outcome.killed_by[0]]
                if violation.trace:
                    click.echo(violation.as_trace(explorer.world, f"mutant {mutant.id}"))
    if report is not None:
        report.close()
    unexplained = [s for s in survivors if not s["equivalent"]]
    if as_json:
        click.echo(json.dumps({"mutants": len(chosen), "killed": killed,
                               "survivors": survivors}))
    else:
        click.echo(f"{len(chosen)} mutants, {killed} killed, {len(survivors)} survived "
                   f"({len(survivors) - len(unexplained)} listed as equivalent)")
        if limits.time:
            click.echo("(the time mutants on " + ("version-1 events and the clock's: --time "
                       "--mutants without --v2)" if limits.v2 else "version-2 events: --time "
                       "--v2 --mutants)"))
            return 1 if unexplained else 0
        if limits.v2:
            click.echo("(the version-1 mutants: --mutants without --v2)")
        else:
            click.echo(f"({skipped_v2(limits.expiry)} mutants of version-2 rows and guards "
                       "are not run: this bound raises no v2 event; see --v2)")
        click.echo(f"({time_mutants()} mutants of the time-based rules run at the time bounds: "
                   "--time --mutants, with and without --v2)")
    return 1 if unexplained else 0
