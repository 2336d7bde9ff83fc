"""The README stays true: its Python runs, its links exist, its test command is what CI runs."""

from __future__ import annotations

import re

from replaykit import EXAMPLES, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_examples_run() -> None:
    blocks = _blocks("python")
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own documentation


def test_local_links_exist() -> None:
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    assert targets
    for target in targets:
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_test_command_is_what_ci_runs() -> None:
    """README's second command and .ci/run run the same steps, in the same order."""
    command = next(b for b in _blocks("sh") if "pytest" in b).strip()
    steps = [s.strip() for s in command.split("&&")]
    assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci_steps = [line for line in ci if line and not line.startswith("#")]
    positions = [ci_steps.index(step) for step in steps[2:]]
    assert positions == sorted(positions)
    assert ci_steps[-1] == steps[-1] == "pytest -q"


def test_main_command_uses_an_example_that_exists() -> None:
    command = next(b for b in _blocks("sh") if "replay" in b)
    trace = re.search(r"pushrules replay (\S+)", command).group(1)
    assert (ROOT / trace).exists() and (ROOT / trace).parent == EXAMPLES


def test_every_rule_option_is_in_the_readme() -> None:
    from pushrules.model.config import Config

    for name in Config.__dataclass_fields__:
        assert f"`{name}`" in README, name
