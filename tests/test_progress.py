"""Progress lines of long runs (checker/progress.py) and `pushrules check --progress`."""

from __future__ import annotations

import io

from click.testing import CliRunner

from pushrules.check_cmd import check
from pushrules.checker.bounded import Bounds
from pushrules.checker.compiled import CompiledExplorer
from pushrules.checker.explore import Explorer
from pushrules.checker.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_reports_rate_and_eta_when_the_total_is_known() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, "mutants", interval=1.0, clock=clock)
    clock.now = 0.5
    progress.update(5, 100)  # throttled: under a second since the start
    assert out.getvalue() == ""
    clock.now = 10.0
    progress.update(50, 100, "40 killed")
    line = out.getvalue()
    assert line == "50 mutants of 100, 40 killed, 5 mutants/s, 50%, ETA 10 s, 10 s so far\n"


def test_progress_without_total_has_no_eta() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, interval=1.0, clock=clock)
    clock.now = 2.0
    progress.update(3000)
    assert out.getvalue() == "3,000 states, 1,500 states/s, 2 s so far\n"


def test_explorers_report_states_as_they_go_and_explore_the_same() -> None:
    bounds = Bounds(sessions=2, push_sessions=1, orphans=1, stanzas=1)
    plain = CompiledExplorer(bounds).run()
    for explorer in (CompiledExplorer(bounds), Explorer(bounds)):
        out = io.StringIO()
        explorer.progress = Progress(out, interval=0.0)
        result = explorer.run()
        assert (result.states, result.transitions) == (plain.states, plain.transitions)
        counts = [int(line.split(" states")[0].replace(",", ""))
                  for line in out.getvalue().splitlines()]
        assert counts and counts == sorted(counts) and counts[-1] <= result.states
        assert "transitions" in out.getvalue()


def test_check_progress_goes_to_stderr() -> None:
    args = ["--sessions", "1", "--push-sessions", "1", "--orphans", "0", "--stanzas", "1",
            "--json"]
    quiet = CliRunner().invoke(check, args)
    loud = CliRunner().invoke(check, [*args, "--progress"])
    assert quiet.stdout.split('"seconds"')[0] == loud.stdout.split('"seconds"')[0]
    assert quiet.stdout.startswith('{"states": ')
