"""The documentation keeps up with the code: commands, help examples, event types, README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from cli.app import app
from ledger.events import EVENT_TYPES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def command_paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command under ``command``, as the words typed after ``keyledger``.

    Groups are recognised by their ``commands`` mapping rather than by class, because
    newer typer releases ship their own copy of click's classes.
    """
    subcommands = getattr(command, "commands", None)
    if not isinstance(subcommands, dict):
        return [prefix]
    paths: list[tuple[str, ...]] = []
    for name, sub in sorted(subcommands.items()):
        paths.extend(command_paths(sub, (*prefix, name)))
    return paths


COMMANDS = command_paths(typer.main.get_command(app))


def headings(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if re.match(r"#{1,6} ", line)]


def test_command_list_includes_the_secrets_group() -> None:
    """The walk over the CLI reaches the commands nested under ``secrets``."""
    assert ("secrets", "set") in COMMANDS
    assert ("rotate",) in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_a_section_in_cli_md(path: tuple[str, ...]) -> None:
    """Each registered command has a heading in docs/cli.md naming it in backticks."""
    name = " ".join(path)
    sections = headings((DOCS / "cli.md").read_text(encoding="utf-8"))
    assert any(f"`{name}`" in heading for heading in sections), f"no section for `{name}`"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_help_has_an_example(path: tuple[str, ...]) -> None:
    """Each command's --help output shows at least one example."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"NO_COLOR": "1", "COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_is_documented_in_formats_md(event_type: str) -> None:
    """Each event type the ledger can record is named in docs/formats.md."""
    assert f"`{event_type}`" in (DOCS / "formats.md").read_text(encoding="utf-8")


def test_readme_first_code_block_shows_make_demo_and_make_test() -> None:
    """The README opens with a code block that runs the demo and the tests."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```[^\n]*\n(.*?)```", readme, re.DOTALL)
    assert match is not None, "README.md has no code block"
    assert "make demo" in match.group(1)
    assert "make test" in match.group(1)
