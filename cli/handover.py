"""``keyledger run`` and ``keyledger secrets export``: secrets handed to another program,
in its environment or in a file (the rules are :mod:`ledger.exporting`'s)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.completion import secret_names
from cli.context import JsonOption, open_ledger_alone
from cli.env import NEW_PASSWORD_ENV, PASSWORD_ENV
from cli.output import emit_json, err_console, fail, handles_errors, printable
from ledger import InvalidInputError, environment
from ledger.exporting import FORMATS, fetch, plan, render

OnlyOption = Annotated[list[str] | None, typer.Option(
    "--only", help="A secret to hand over (repeat for more); default: every live secret.",
    autocompletion=secret_names)]
PrefixOption = Annotated[str, typer.Option(
    "--prefix", help="Only secrets whose names start with this; it is taken off the variable's name.")]
RenameOption = Annotated[bool, typer.Option(
    "--rename", help="Map names that are not environment names: upper case, other characters to _.")]
#: Never handed to the program: what unlocks the ledger stays with keyledger.
WITHHELD = tuple(name + suffix for name in (PASSWORD_ENV, NEW_PASSWORD_ENV)
                 for suffix in ("", environment.FILE_SUFFIX))
#: Variables that change what a program loads or runs rather than what it is told: a
#: secret may set one only with --override, as if it were already set.
STEERING = frozenset({"PATH", "IFS", "ENV", "BASH_ENV", "PS4", "SHELLOPTS", "BASHOPTS",
                      "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PERL5LIB", "PERL5OPT",
                      "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS", "GCONV_PATH"})
STEERING_PREFIXES = ("LD_", "DYLD_")
#: The exit code of a program that cannot be found, or run, as a POSIX shell gives it.
EXIT_NOT_FOUND, EXIT_NOT_RUNNABLE = 127, 126


@handles_errors
def run_command(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(
        help="The program and its arguments, after --.", show_default=False)],
    only: OnlyOption = None, prefix: PrefixOption = "", rename: RenameOption = False,
    override: Annotated[bool, typer.Option(
        "--override", help="Let a secret replace a variable already in the environment.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Report a failure to start the program as one JSON document.")] = False,
) -> None:
    """Run a program with secrets added to its environment.

    keyledger decrypts the chosen secrets (each a recorded read when read auditing is on),
    then replaces itself with the program (exec): its exit code and signals are the
    program's own. The master password variables are not passed on.

    Example:  keyledger run --prefix web/ -- gunicorn app:wsgi
    """
    inherited = {k: v for k, v in os.environ.items() if k not in WITHHELD}
    program = shutil.which(command[0]) if "/" not in command[0] else command[0]
    with open_ledger_alone(ctx) as ledger:
        chosen = plan(ledger, only=only or (), prefix=prefix, rename=rename)
        _refuse_clashes(set(chosen.values()), override)
        if program is None:  # said before a read is recorded: nothing was handed over
            fail(f"{printable(command[0])}: command not found", code=EXIT_NOT_FOUND,
                 as_json=as_json)
        values = fetch(ledger, chosen)
    inherited.update(values)
    del values
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, inherited)
    except FileNotFoundError:
        fail(f"{printable(command[0])}: command not found", code=EXIT_NOT_FOUND, as_json=as_json)
    except OSError as exc:
        fail(f"{printable(command[0])}: cannot run it ({exc.strerror})", code=EXIT_NOT_RUNNABLE,
             as_json=as_json)


def _refuse_clashes(variables: set[str], override: bool) -> None:
    """:raises InvalidInputError: a variable is one of the master password's (always), or
    already set, or steers what the program loads or runs (both unless ``override``)."""
    withheld = sorted(variables & set(WITHHELD))
    if withheld:
        raise InvalidInputError(
            f"{', '.join(withheld)} would unlock a ledger: never handed to a program")
    clashes = sorted(v for v in variables if v in os.environ or v in STEERING
                     or v.startswith(STEERING_PREFIXES))
    if clashes and not override:
        raise InvalidInputError(
            f"{len(clashes)} variable(s) are already set or steer what the program runs: "
            f"{', '.join(clashes[:10])}; --override lets the secrets set them")


@handles_errors
def export_command(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option(
        "--format", help=f"One of {', '.join(FORMATS)}.")] = "dotenv",
    only: OnlyOption = None, prefix: PrefixOption = "", rename: RenameOption = False,
    out: Annotated[Path | None, typer.Option(
        "--out", dir_okay=False, help="Write to this file (created 0600) instead of stdout.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace --out if it exists (in one rename).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print (or write) secrets' values as a .env file, shell exports or JSON.

    Names and selection as for `keyledger run`; each value is a recorded read when read
    auditing is on. With --json, a summary is printed and the values go to --out only.

    Example:  keyledger secrets export --format dotenv --out /run/app/.env
    """
    if fmt not in FORMATS:
        raise InvalidInputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if as_json and out is None:
        raise InvalidInputError("with --json the values go to a file: give --out FILE")
    from ledger.private_files import check_writable, write_private

    if out is not None:
        check_writable(out, replace=force)  # before a read is recorded
    with open_ledger_alone(ctx) as ledger:
        values = fetch(ledger, plan(ledger, only=only or (), prefix=prefix, rename=rename))
    text = render(values, fmt)
    if out is None:
        sys.stdout.write(text)
        return
    write_private(out, text, replace=force)
    if as_json:
        emit_json({"exported": len(values), "format": fmt, "out": str(out)})
    else:
        err_console.print(f"✅ {len(values)} secret(s) written to {out} ({fmt}, mode 0600)",
                          markup=False)


__all__ = ["export_command", "run_command"]
