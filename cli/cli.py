"""The `pushrules` command line."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import click

from pushrules.model.config import Config


def parse_settings(pairs: tuple[str, ...]) -> Config:
    settings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not name=value", param_hint="--set")
        settings[name.strip()] = value
    try:
        return Config().with_settings(settings)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None


# Commands that live in their own modules, imported only when used (keeps `replay` fast to start
# and lets each feature own its module). A module that is not installed is not listed.
LAZY_COMMANDS = {
    "check": "pushrules.check_cmd:check",
    "bench": "pushrules.bench_cmd:bench",
    "serve": "pushrules.serve_cmd:serve",
    "registrations": "pushrules.registrations_cmd:registrations",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for name, target in LAZY_COMMANDS.items() if _available(target)]
        return sorted({*super().list_commands(ctx), *lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and _available(LAZY_COMMANDS[name]):
            module, attr = LAZY_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


def _available(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pushrules")
def main() -> None:
    """When an XMPP server should send XEP-0357 push notifications: the model, its diagrams,
    a replayable runtime and a model checker."""


@main.command()
@click.option("--check", is_flag=True, help="Exit 1, naming stale files, instead of writing.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Project checkout to render into (default: found from the current folder).")
def render(check: bool, root: Path | None) -> None:
    """Render generated/ and diagrams/ from model/."""
    from pushrules.render import RenderError, check_inputs, find_root, render_all, stale, write

    try:
        root = root or find_root(Path.cwd())
        check_inputs(root)
        files = render_all()
    except RenderError as exc:
        raise click.ClickException(str(exc)) from None
    if check:
        problems = stale(root, files)
        if problems:
            for problem in problems:
                click.echo(f"stale: {problem}", err=True)
            click.echo("run `pushrules render` and commit the result", err=True)
            sys.exit(1)
        click.echo(f"up to date: {len(files)} files match model/")
        return
    changed = write(root, files)
    for rel in changed:
        click.echo(f"wrote {rel}")
    click.echo(f"{len(files)} files, {len(changed)} changed")


@main.command()
@click.argument("trace", type=click.File("rb"))  # decoded per line: errors name the line
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="Rule option, repeatable; every option with its default: "
                   + Config.options_help() + ".")
@click.option("--explain", is_flag=True, help="Say, for every event, what was decided and why.")
@click.option("--strict", is_flag=True, help="Reject impossible events (exit 2) instead of "
                                             "warning and skipping them.")
@click.option("--store", "store_url", metavar="URL",
              help="Apply the trace to a store and keep the state there (sqlite:///path/to.db, "
                   "redis://host:port/db?prefix=pushrules, memory:); then try "
                   "`pushrules registrations USER --store URL`. Default: in memory, not kept.")
def replay(trace, settings: tuple[str, ...], explain: bool, strict: bool,
           store_url: str | None) -> None:
    """Replay a TRACE of server events (JSON Lines; - for stdin); print the pushes.

    The clock is the events' `at`: with burst_window, orphan_ttl or retry_after set, what comes
    due happens before the event that passed its time, and the held pushes are sent at the end
    of input (or at a line that ends the replay), each at its due time."""
    from pushrules.runtime.replay import EXIT_BAD_INPUT, open_engine
    from pushrules.runtime.replay import replay as run

    config = parse_settings(settings)
    try:
        engine, close = open_engine(store_url, config, explain=explain)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        status = run(trace, sys.stdout, sys.stderr, config=config, explain=explain,
                     strict=strict, engine=engine)
    finally:
        close()
    sys.stdout.flush()
    sys.exit(status)


if __name__ == "__main__":
    main()
