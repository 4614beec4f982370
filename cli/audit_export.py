"""``keyledger audit export``: the compliance report, written to a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cli.context import JsonOption, settings
from cli.output import EXIT_FAILED, console, emit_json, err_console, handles_errors
from ledger.errors import InvalidInputError
from ledger.policy import DEFAULT_MAX_AGE_DAYS

MAX_POLICY_DAYS = 36_525  # a century: past it the dates no longer compute


class ReportFormat(StrEnum):
    json = "json"
    csv = "csv"
    md = "md"
    html = "html"


_SUFFIXES = {".json": ReportFormat.json, ".csv": ReportFormat.csv, ".md": ReportFormat.md,
             ".markdown": ReportFormat.md, ".html": ReportFormat.html, ".htm": ReportFormat.html}


@handles_errors
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(
        "--out", "-o", dir_okay=False, help="The report file to write (a new file, unless --force).")],
    fmt: Annotated[ReportFormat | None, typer.Option(
        "--format", "-f", help="json, csv, md or html (default: from the --out suffix).")] = None,
    policy_days: Annotated[int, typer.Option(
        "--policy-days", min=1, max=MAX_POLICY_DAYS,
        help="The cryptoperiod: an active key version older than this is flagged overdue.")
    ] = DEFAULT_MAX_AGE_DAYS,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write the compliance report: key inventory, rotations, migrations, usage, integrity.

    Sections: key versions with their status and age against the cryptoperiod; every
    rotation (and rejected attempt) with actor, time, origin and reason; retirements and
    destructions; secrets per key version; migration runs; failed operations; encryptions
    per version against NIST SP 800-38D's 2^32 limit; the verification of the whole
    ledger; and which section evidences which PCI DSS, HIPAA and NIST requirement.

    Built from the events alone (no master password, no value, no ciphertext) and stamped
    with the seq and head hash it describes. The file is written atomically, mode 0600.
    Exit 1, after writing the report, when the ledger does not verify.

    Example:  keyledger audit export --format html --out /srv/reports/keys-$(date +%F).html
    """
    # Imported here, as only this command needs them: every other command starts faster.
    from projections.renderers.compliance import render
    from projections.reports.compliance import build_compliance_report

    chosen = fmt or _SUFFIXES.get(out.suffix.lower())
    if chosen is None:
        raise InvalidInputError(f"cannot tell the format from {out.name!r}: pass --format "
                                "json, csv, md or html")
    if out.exists() and not force:
        raise InvalidInputError(f"{out} exists; pass --force to replace it")
    with settings(ctx).recorder() as recorder:
        report = build_compliance_report(recorder, policy_days=policy_days)
    write_private(out, render(report, chosen.value), replace=force)
    ok = report.integrity.ok
    if as_json:
        emit_json({"path": str(out), "format": chosen.value, "seq": report.built_from_seq,
                   "head": report.built_from_head, "ok": ok,
                   "overdue_versions": report.overdue_versions,
                   "generated_at": report.generated_at})
    elif ok:
        overdue = ", ".join(f"v{v}" for v in report.overdue_versions)
        console.print(f"📋 Wrote the {chosen.value} compliance report to {out}: seq "
                      f"{report.built_from_seq}, head {report.built_from_head[:16]}…, ledger "
                      f"verified" + (f"; overdue: {overdue}" if overdue else ""), markup=False)
    else:
        err_console.print(f"❌ Wrote the {chosen.value} compliance report to {out}, but the "
                          f"ledger does NOT verify (first bad seq "
                          f"{report.integrity.first_bad_seq}): see its integrity section",
                          markup=False)
    if not ok:
        raise typer.Exit(EXIT_FAILED)


def write_private(path: Path, text: str, *, replace: bool) -> None:
    """Write ``text`` to ``path`` all at once, mode 0600: a temporary file in the same
    directory, flushed to disk, then renamed over ``path`` (``replace``) or linked to it,
    which fails rather than replace a file that appeared meanwhile.

    :raises InvalidInputError: ``path`` exists and ``replace`` is false.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp, path)
            return
        try:
            os.link(temp, path)
        except FileExistsError:
            raise InvalidInputError(f"{path} exists; pass --force to replace it") from None
        except OSError:  # a file system without hard links: check, then rename
            if path.exists():
                raise InvalidInputError(f"{path} exists; pass --force to replace it") from None
            os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
