"""`pushrules render`: byte-identical output, --check naming stale and stray files, and diagrams
that show every transition's event, guard, actions and rule (self-loops included)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from replaykit import ROOT, cli

from pushrules.model.extract import extract
from pushrules.render import render_all

IR = extract()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what render reads and writes: pyproject.toml, model/, generated/, diagrams/."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root)
    for folder in ("model", "generated", "diagrams"):
        shutil.copytree(ROOT / folder, root / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _render(root: Path, seed: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run([sys.executable, "-m", "pushrules.cli", "render", "--root", str(root),
                           *args], capture_output=True, text=True, env=env, check=False)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for folder in ("generated", "diagrams") for p in sorted((root / folder).iterdir())
            if p.is_file()}


def test_checkout_is_up_to_date() -> None:
    run = cli("render", "--check", "--root", str(ROOT))
    assert run.status == 0, run.err
    assert run.out.startswith("up to date: ")


def test_render_is_byte_identical_across_runs_and_hash_seeds(checkout: Path) -> None:
    first = _render(checkout, "1")
    assert first.returncode == 0, first.stderr
    before = _snapshot(checkout)
    second = _render(checkout, "2")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().endswith("0 changed")
    assert _snapshot(checkout) == before
    assert render_all() == render_all()


def test_check_names_a_stale_file(checkout: Path) -> None:
    tables = checkout / "generated" / "tables.py"
    tables.write_text(tables.read_text().replace("a/queued", "a/queue", 1))
    run = cli("render", "--check", "--root", str(checkout))
    assert run.status == 1
    assert "stale: generated/tables.py: differs from what model/ gives" in run.err
    assert run.err.count("stale:") == 1
    assert not cli("render", "--root", str(checkout)).status
    assert cli("render", "--check", "--root", str(checkout)).status == 0


def test_check_names_missing_and_stray_files(checkout: Path) -> None:
    (checkout / "diagrams" / "session.svg").unlink()
    (checkout / "diagrams" / "old-session.svg").write_text("<svg/>")
    run = cli("render", "--check", "--root", str(checkout))
    assert run.status == 1
    assert "stale: diagrams/session.svg: missing" in run.err
    assert "stale: diagrams/old-session.svg: not produced by the model (stray file)" in run.err


def test_render_writes_only_what_changed(checkout: Path) -> None:
    (checkout / "generated" / "rules.md").write_text("edited by hand\n")
    run = cli("render", "--root", str(checkout))
    assert run.status == 0
    assert run.out.splitlines()[0] == "wrote generated/rules.md"
    assert run.out.splitlines()[-1].endswith(" 1 changed")


def test_render_outside_a_checkout_says_so(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pushrules.cli", "render", "--check"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "no pushrules checkout" in proc.stderr and "--root" in proc.stderr


# --- the diagrams show every rule --------------------------------------------------------------

def _svg_text(name: str) -> str:
    svg = (ROOT / "diagrams" / f"{name}.svg").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", svg))


@pytest.mark.parametrize("machine", [m.name for m in IR.machines])
def test_every_transition_is_labelled_in_the_svg(machine: str) -> None:
    """A spec author reviews rules from diagrams/ alone: every transition's event, guard,
    actions and rule tag are in the picture, self-transitions included."""
    text = " ".join(_svg_text(machine).split())
    m = IR.machine(machine)
    for t in m.every_transition:
        for word in (t.event_name, t.rule, *t.actions, *(g.name for g in t.guards),
                     *t.triggers):
            assert word in text, f"{machine}: {t.source} -{t.event_name}-> {t.target}: {word}"
    for state in m.states:
        assert state in text


@pytest.mark.parametrize("machine", [m.name for m in IR.machines])
def test_every_transition_is_in_the_mermaid(machine: str) -> None:
    mmd = (ROOT / "diagrams" / f"{machine}.mmd").read_text(encoding="utf-8")
    m = IR.machine(machine)
    edges = [line.strip() for line in mmd.splitlines() if "-->" in line and "[*]" not in line]
    for t in m.transitions:
        found = [e for e in edges if e.startswith(f"{t.source} --> {t.target}:")
                 and t.event_name in e]
        assert found, f"{machine}: {t.source} -{t.event_name}-> {t.target} missing"
        for word in (t.rule, *t.actions, *(g.name for g in t.guards)):
            assert any(word in e for e in found), (t, word)


@pytest.mark.parametrize("machine", [m.name for m in IR.machines])
def test_mermaid_labels_are_safe_for_state_diagrams(machine: str) -> None:
    """stateDiagram-v2 ends a label at a line end and treats ':' as the label separator; `;`
    and braces confuse its parser: labels use entity codes (#58; #59;) instead."""
    mmd = (ROOT / "diagrams" / f"{machine}.mmd").read_text(encoding="utf-8")
    body = mmd.split("stateDiagram-v2", 1)[1]
    for line in body.splitlines():
        if "-->" not in line:
            continue
        label = line.split(":", 1)[1] if ":" in line else ""
        assert not re.search(r"[:;{}]", label.replace("#58;", "").replace("#59;", "")), line


def test_render_refuses_a_checkout_whose_model_is_not_the_imported_one(checkout: Path) -> None:
    """After `pip install .` an edit to model/ must not pass --check as "up to date"."""
    rules = checkout / "model" / "rules.py"
    rules.write_text(rules.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    for args in (("--check",), ()):
        run = _render(checkout, "0", *args)
        assert run.returncode == 1
        assert "model/rules.py differ from the installed copy" in run.stderr
        assert "pip install -e" in run.stderr and "Traceback" not in run.stderr
    assert (checkout / "model" / "rules.py").read_text(encoding="utf-8").endswith("# edited\n")


README_WIDTH_PT = 900
"""What a README column shows without shrinking the text out of reading (~800 px; the diagrams
were 2,294 and 2,178 pt wide, laid out left to right with loops)."""


@pytest.mark.parametrize("machine", [m.name for m in IR.machines])
def test_diagrams_fit_readme_width_and_edges_carry_contract_events(machine: str) -> None:
    svg = (ROOT / "diagrams" / f"{machine}.svg").read_text(encoding="utf-8")
    width = float(re.search(r'<svg width="([0-9.]+)pt"', svg).group(1))
    assert width <= README_WIDTH_PT, width
    dot = (ROOT / "generated" / f"{machine}.dot").read_text(encoding="utf-8")
    contract = {spec.name for spec in IR.events}
    edges = re.findall(r"^  (\w+) -> (\w+) \[label=<(.*?)>(?:\]|, )", dot, flags=re.M)
    assert edges
    for source, target, label in edges:
        if source == "__initial":
            continue
        for name in label.split("<br/>"):
            assert name in contract or name.startswith("time: "), (source, target, name)
