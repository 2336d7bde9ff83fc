"""`pip install .` gives a working CLI outside the source tree, with only namespaced packages.

Builds a wheel from a copy of the checkout (as `pip install .` would), installs it into a
temporary folder and runs it from another working directory, so nothing of the source tree can
be picked up by accident. Dependencies come from the test environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from replaykit import EXAMPLES, ROOT

SKIP = shutil.ignore_patterns(".git", ".mypy-path", "build", "dist", "*.egg-info", "__pycache__",
                              ".venv", ".pytest_cache", ".hypothesis", ".ruff_cache", "tests")


def test_wheel_installs_a_working_cli(tmp_path: Path) -> None:
    source, wheels, site, elsewhere = (tmp_path / n for n in ("src", "wheels", "site", "cwd"))
    shutil.copytree(ROOT, source, ignore=SKIP)
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], check=True,
                   cwd=elsewhere, capture_output=True)
    (wheel,) = wheels.glob("pushrules-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"pushrules", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert "pushrules/templates/machine.dot.j2" in names
    assert "pushrules/generated/tables.py" in names

    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, cwd=elsewhere, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u, pushrules; print(pushrules.__file__);"
         "print(u.find_spec('model'), u.find_spec('runtime'), u.find_spec('generated'))"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    where, bare = probe.stdout.splitlines()
    assert Path(where).is_relative_to(site)
    assert bare == "None None None", "a bare package landed in site-packages"

    shutil.copy(EXAMPLES / "tour.jsonl", elsewhere)
    script = site / "bin" / "pushrules"
    assert script.exists(), "no console script"
    run = subprocess.run([sys.executable, str(script), "replay", "tour.jsonl"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout == (EXAMPLES / "tour.expected").read_text(encoding="utf-8")
    render = subprocess.run([sys.executable, str(script), "render", "--check",
                             "--root", str(source)], cwd=elsewhere, env=env,
                            capture_output=True, text=True, check=False)
    assert render.returncode == 0, render.stderr

    # An edit in the checkout is not what the installed copy renders: refused, named.
    session = source / "model" / "session.py"
    session.write_text(session.read_text(encoding="utf-8").replace(
        "wake it for this stanza", "wake it for that stanza"), encoding="utf-8")
    render = subprocess.run([sys.executable, str(script), "render", "--check",
                             "--root", str(source)], cwd=elsewhere, env=env,
                            capture_output=True, text=True, check=False)
    assert render.returncode == 1
    assert "model/session.py differ from the installed copy" in render.stderr, render.stderr
    assert "pip install -e" in render.stderr
