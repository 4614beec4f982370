"""Audit commands: verify the ledger, show its signing key, anchor its latest checkpoint;
the forensic, monitoring and reporting commands are registered here from their modules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import alerts, audit_export, audit_forensics, audit_trail
from cli.context import CLI_ORIGIN, JsonOption, master_password, settings
from cli.output import EXIT_FAILED, console, emit_json, err_console, handles_errors
from ledger import Ledger
from ledger.errors import IntegrityError, LedgerFormatError
from ledger.integrity import VerifyReport, verify_ledger
from ledger.seen import STATE_DIR_ENV
from ledger.signing import Anchor, read_anchor, recorded_public_key, write_anchor

if TYPE_CHECKING:
    pass

app = typer.Typer(
    help="Prove the ledger was not altered, and review what happened in it.",
    no_args_is_help=True,
)


@app.command("verify")
@handles_errors
def verify(
    ctx: typer.Context,
    anchor: Annotated[Path | None, typer.Option(
        "--anchor", dir_okay=False,
        help="An anchor written by `audit anchor`: detects truncation, rollback or "
             "rewriting up to it.")] = None,
    pubkey: Annotated[str | None, typer.Option(
        "--pubkey",
        help="Pin the signing key (as `audit pubkey` prints it): catches a wholesale rewrite.")] = None,
    all_signatures: Annotated[bool, typer.Option(
        "--all-signatures",
        help="Check every checkpoint's signature, not only the latest (slower).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Recompute the whole hash chain, check the signed checkpoints, SQLite's integrity and
    the triggers that keep the ledger append-only and the read models guarded.

    Exit 0 when intact; exit 1, naming the first bad seq, when any event was edited,
    deleted, inserted, reordered or cut off, and naming the trigger when one was dropped,
    altered or added. Needs no master password.

    Example:  keyledger audit verify --anchor /offsite/keyledger.anchor --pubkey ed25519:...
    """
    pinned = None if anchor is None else read_anchor(anchor)
    with settings(ctx).recorder(read_only=True) as recorder:
        report = verify_ledger(recorder, anchor=pinned, pinned_key=pubkey,
                               all_signatures=all_signatures)
        from projections import guard_faults

        report.add_trigger_faults(guard_faults(recorder))
    if as_json:
        emit_json(report.to_json())
    else:
        _print_verify(report)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _print_verify(report: VerifyReport) -> None:
    latest = report.latest_checkpoint
    if report.ok:
        console.print(f"✅ Ledger intact: {report.events} events, head {report.head[:16]}…")
        if latest is not None:
            console.print(f"🔏 Latest checkpoint: seq {latest.seq}, signed {latest.signed_at} "
                          f"({report.checkpoints} checkpoints)")
        if report.anchor is not None:
            console.print(f"⚓ Matches the anchor at seq {report.anchor.checkpoint.seq}")
        return
    if report.events_intact:
        err_console.print(f"❌ Ledger NOT protected: its {report.events} events verify, but "
                          "keyledger's triggers were changed", markup=False)
    else:
        blamed = "" if report.first_bad_seq is None else f": first bad seq {report.first_bad_seq}"
        err_console.print(f"❌ Ledger NOT intact{blamed}", markup=False)
    for problem in report.problems:
        err_console.print(f"   {problem}", markup=False)


@app.command("pubkey")
@handles_errors
def pubkey(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Print the public half of the ledger's checkpoint-signing key (Ed25519).

    Store it away from the ledger; `audit verify --pubkey` then pins it.

    Example:  keyledger audit pubkey > /offsite/keyledger.pub
    """
    with settings(ctx).recorder() as recorder:
        key = recorded_public_key(recorder)
    if key is None:
        raise LedgerFormatError("the ledger records no signing key")
    if as_json:
        emit_json({"public_key": key, "algorithm": "Ed25519"})
    else:
        console.print(key)


@app.command("anchor")
@handles_errors
def anchor(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="The anchor file to write (new file).")],
    as_json: JsonOption = False,
) -> None:
    """Verify the ledger, then write its latest signed checkpoint to a file kept elsewhere.

    `audit verify --anchor FILE` later detects truncation, rollback or rewriting of
    anything up to that checkpoint. Needs no master password.

    Example:  keyledger audit anchor --out /offsite/keyledger-$(date +%F).anchor
    """
    with settings(ctx).recorder() as recorder:
        report = verify_ledger(recorder)
    if not report.ok or report.latest_checkpoint is None or report.public_key is None:
        blamed = (report.problems[0] if report.first_bad_seq is None and report.problems
                  else f"first bad seq {report.first_bad_seq}")
        raise IntegrityError(
            f"the ledger does not verify ({blamed}); not anchoring it: run `keyledger audit verify`"
        )
    result = Anchor(report.latest_checkpoint, report.public_key)
    write_anchor(out, result)
    if as_json:
        emit_json({"path": str(out), **result.to_json()})
    else:
        console.print(f"⚓ Anchored seq {result.checkpoint.seq} (head {result.checkpoint.head[:16]}…) "
                      f"in {out}; keep it away from the ledger")


@app.command("seen")
@handles_errors
def seen(
    ctx: typer.Context,
    forget: Annotated[bool, typer.Option(
        "--forget",
        help="Trust the ledger as it is now: replace what this host remembers with its "
             "current checkpoint (after putting an older copy back on purpose).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show the newest checkpoint this host verified for the ledger beside its tip now.

    Every command that unlocks refuses a ledger behind that checkpoint, or with another
    history at it (a copy put back over the file). The memory is kept in
    $KEYLEDGER_STATE_DIR/seen.json (default ~/.local/state/keyledger; `off` disables it).

    Example:  keyledger audit seen --forget
    """
    s = settings(ctx)
    with Ledger.unlock(s.recorder(), master_password(), actor=s.actor, origin=CLI_ORIGIN,
                       seen=None) as ledger:
        result = ledger.review_seen(forget=forget)
    if as_json:
        emit_json(result.to_json())
        return
    if result.state_file is None:
        console.print(f"This host keeps no memory of checkpoints ({STATE_DIR_ENV}=off).",
                      markup=False)
    elif result.remembered is None:
        console.print(f"This host has no checkpoint of this ledger in {result.state_file}.",
                      markup=False)
    else:
        old = result.remembered
        console.print(f"This host verified seq {old.seq} (head {old.head_hash[:16]}…, signed "
                      f"{old.signed_at}); the ledger is {result.verdict}.", markup=False)
    now = result.current
    console.print(f"The ledger ends at seq {now.seq} (head {now.head_hash[:16]}…, signed "
                  f"{now.signed_at}).", markup=False)
    if result.forgotten:
        console.print(f"Forgot the old checkpoint: this host now remembers seq {now.seq}.",
                      markup=False)


# The forensic, monitoring and reporting commands live in their own modules.
app.command("log")(audit_forensics.log)
app.command("alerts")(alerts.alerts)
app.command("replay")(audit_forensics.replay)
app.command("incident")(audit_forensics.incident)
app.command("export")(audit_export.export)
app.command("metrics")(audit_trail.metrics)
app.command("reads")(audit_trail.reads)
