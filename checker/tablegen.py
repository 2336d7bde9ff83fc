"""The tables module `pushrules render` generates, built in memory from a (mutated) model IR.

It renders the same template (``templates/tables.py.j2`` of the pushrules package) with the
filters that template uses; tests/test_mutants.py checks that the source it builds from the
real model is byte for byte generated/tables.py, so the two cannot drift apart. Kept here, not
imported from cli/, so the checker does not depend on the command line.
"""

from __future__ import annotations

import types
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from pushrules.model.extract import ModelIR


@cache
def _template() -> Template:
    env = Environment(loader=PackageLoader("pushrules", "templates"), undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=False, autoescape=False)
    env.filters["pyrepr"] = repr
    return env.get_template("tables.py.j2")


def tables_source(ir: ModelIR) -> str:
    """The text of generated/tables.py for ``ir``."""
    return _template().render(ir=ir)


def build_tables(ir: ModelIR) -> types.ModuleType:
    """The tables module for ``ir``, compiled in memory."""
    module = types.ModuleType("pushrules_mutant_tables")
    exec(compile(tables_source(ir), "<mutant tables>", "exec"), module.__dict__)  # noqa: S102
    return module
