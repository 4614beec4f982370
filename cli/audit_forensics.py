"""Forensic audit commands: the event log, the state at a past point, a key's blast radius.

Registered on the ``audit`` group by :mod:`cli.audit`. They read the events alone (no
read models, no master password) through :mod:`projections.reports.forensics`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.completion import key_versions, secret_names
from cli.context import JsonOption, settings
from cli.output import console, emit_json, handles_errors, printable

if TYPE_CHECKING:
    from projections.reports.forensics import IncidentReport, ReplayState

SinceOption = Annotated[str | None, typer.Option(
    "--since", help="From this time: 2026-11-01, 2026-11-01T02:00Z, or 24h / 7d ago.")]
UntilOption = Annotated[str | None, typer.Option(
    "--until", help="Up to this time (inclusive), in the same forms as --since.")]
ACTOR_WIDTH = 20


@handles_errors
def log(
    ctx: typer.Context,
    secret: Annotated[str | None, typer.Option(
        "--secret", help="Only events about this secret (its writes, migrations, reads).",
        autocompletion=secret_names)] = None,
    types: Annotated[list[str] | None, typer.Option(
        "--type", help="Only events of this type, such as KeyRotated (repeat for several).")] = None,
    actor: Annotated[str | None, typer.Option(
        "--actor", help="Only events recorded by this actor (exactly).")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Go on printing events as they are appended, one per line "
                               "(JSON Lines with --json), until SIGINT or SIGTERM.")] = False,
    after_seq: Annotated[int, typer.Option(
        "--after-seq", min=0, help="Only events after this seq (to resume a --follow).")] = 0,
    as_json: JsonOption = False,
) -> None:
    """List the ledger's events in order: who did what, when, from where.

    Streams the events, so it suits a ledger of any size. Shows no value and no
    ciphertext. Needs no master password. With --follow, waits for new events from any
    process and prints each as it lands, for shipping to a SIEM.

    Example:  keyledger audit log --follow --after-seq 4210 --json >> /var/log/keyledger.jsonl
    """
    from projections.reports import forensics  # here: start-up stays lean

    filters: dict[str, Any] = {"secret": secret, "types": types or (), "actor": actor,
                               "since": since, "until": until}
    if follow:
        _follow(ctx, after_seq, filters, as_json)
        return
    with settings(ctx).recorder() as recorder:
        events = forensics.audit_log(recorder, after_seq=after_seq, **filters)
        out = sys.stdout
        if as_json:
            out.write("[")
            for count, stored in enumerate(events):
                text = json.dumps(forensics.event_document(stored), indent=2, ensure_ascii=False)
                out.write(("," if count else "") + "\n  " + text.replace("\n", "\n  "))
            out.write("\n]\n")
        else:
            shown = 0
            for stored in events:
                doc = forensics.event_document(stored)
                out.write(f"{doc['seq']:>6}  {doc['occurred_at']}  "
                          f"{printable(doc['actor']):<{ACTOR_WIDTH}}  {doc['type']:<24}  "
                          f"{printable(forensics.event_summary(doc))}".rstrip() + "\n")
                shown += 1
            if not shown:
                console.print("No events match.")
        out.flush()


def _follow(ctx: typer.Context, after_seq: int, filters: dict[str, Any], as_json: bool) -> None:
    """``audit log --follow``: each event flushed as it is printed; SIGINT and SIGTERM end
    it between two looks (exit 0), as does a reader that went away."""
    import signal
    import threading

    from projections.reports import forensics

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    out = sys.stdout
    try:
        with settings(ctx).recorder(read_only=True) as recorder:
            for stored in forensics.follow(recorder, after_seq=after_seq, stopped=stop.wait,
                                           **filters):
                doc = forensics.event_document(stored)
                if as_json:
                    out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
                else:
                    out.write(f"{doc['seq']:>6}  {doc['occurred_at']}  "
                              f"{printable(doc['actor']):<{ACTOR_WIDTH}}  {doc['type']:<24}  "
                              f"{printable(forensics.event_summary(doc))}".rstrip() + "\n")
                out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, to it or to anyone.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@handles_errors
def replay(
    ctx: typer.Context,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="The state after the last event recorded by this time "
                        "(2026-11-01T02:00Z, or 24h / 7d ago).")] = None,
    seq: Annotated[int | None, typer.Option("--seq", help="The state after event N.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the keyring and which secret was on which key version at a past point.

    Computed by replaying the events from the first one, not read from the read
    models, so it also checks them. Give exactly one of --as-of and --seq.

    Example:  keyledger audit replay --as-of 2026-11-01T02:00Z --json
    """
    from projections.reports import forensics  # here: start-up stays lean

    with settings(ctx).recorder() as recorder:
        state = forensics.replay(recorder, seq=seq, as_of=as_of)
    if as_json:
        emit_json(state)
    else:
        _print_replay(state)


def _print_replay(state: ReplayState) -> None:
    console.print(f"⏪ State after event {state.seq} ({state.occurred_at}), head {state.head[:16]}…")
    console.print(f"🔑 Current key version: {state.current_version}; can decrypt: "
                  f"{', '.join(map(str, state.available_versions)) or 'none'}")
    for version, meta in state.key_metadata.items():
        console.print(f"   v{version:<4} {meta.status:<26} created {meta.created_at}"
                      + (f", rotated {meta.rotated_at}" if meta.rotated_at else "")
                      + f"  {meta.origin}  {meta.fingerprint}", markup=False)
    console.print(f"🔐 {len(state.secrets)} live secret(s)")
    for name, version in state.secrets.items():
        console.print(f"   {printable(name)}  v{version}", markup=False)


@handles_errors
def incident(
    ctx: typer.Context,
    version: Annotated[int, typer.Option("--version", help="The compromised key version.",
                                         autocompletion=key_versions)],
    since: SinceOption = None,
    until: UntilOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the blast radius of a compromised key version, and how to recover.

    Lists the secrets on it now and ever (within --since/--until), every event that
    touched it, and the commands that take it out of use. Needs no master password.

    Example:  keyledger audit incident --version 3 --since 2026-10-01 --json
    """
    from projections.reports import forensics  # here: start-up stays lean

    with settings(ctx).recorder() as recorder:
        report = forensics.incident(recorder, version, since=since, until=until)
    if as_json:
        emit_json(report)
    else:
        _print_incident(report)


def _print_incident(report: IncidentReport) -> None:
    from projections.reports import forensics
    window = report.window
    span = ("" if window.since is None and window.until is None
            else f" between {window.since or 'the start'} and {window.until or 'now'}")
    console.print(f"🚨 Key version {report.version} ({report.status}), as of event "
                  f"{report.as_of['seq']}", markup=False)
    _print_names(f"Secrets on it now ({len(report.secrets_currently_on_version)})",
                 report.secrets_currently_on_version)
    _print_names(f"Secrets ever on it{span} ({len(report.secrets_ever_on_version)})",
                 report.secrets_ever_on_version)
    console.print(f"📜 Events touching it{span} ({len(report.events)}):", markup=False)
    for doc in report.events:
        console.print(f"   {doc['seq']:>6}  {doc['occurred_at']}  {printable(doc['actor'])}  "
                      f"{doc['type']}  {printable(forensics.event_summary(doc))}".rstrip(), markup=False)
    console.print("🛠  Remediation, in order:")
    for number, step in enumerate(report.remediation, 1):
        console.print(f"   {number}. {printable(step)}", markup=False)


def _print_names(title: str, names: list[str]) -> None:
    console.print(f"🔐 {title}:" + ("" if names else " none"), markup=False)
    for name in names:
        console.print(f"   {printable(name)}", markup=False)


