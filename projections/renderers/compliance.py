"""Rendering a :class:`~projections.reports.compliance.ComplianceReport` as JSON, CSV, Markdown or HTML.

Every format shows the same sections (:data:`projections.reports.compliance.SECTIONS`), built
from one tabular view of the report (:func:`sections`), so no format can drift from the
others:

- ``json``: the report as one JSON document (``ComplianceReport.to_json``);
- ``csv``: one file in long form, ``section,item,field,value``: a section's facts have an
  empty ``item``; each table row is numbered from 1 in ``item`` and spreads over one line
  per column. Any spreadsheet can pivot it back, and its header never changes. A text
  cell that a spreadsheet would run as a formula is prefixed with ``'``;
- ``md``: a heading per section, its facts as a list and its rows as a table;
- ``html``: one self-contained page (inline style and SVG, no script, nothing fetched,
  a Content-Security-Policy forbidding any fetch) with a bar chart of live secrets per key
  version and a timeline of every version's life. Every string is HTML-escaped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any, Literal

from projections.renderers.charts import STATUS_COLOURS, bar_chart, timeline
from projections.reports.compliance import SECTIONS, ComplianceReport

Format = Literal["json", "csv", "md", "html"]
FORMATS: tuple[Format, ...] = ("json", "csv", "md", "html")
CSV_HEADER = ("section", "item", "field", "value")

# Column kinds decide how a value is displayed; CSV and JSON keep the raw value.
Kind = Literal["text", "int", "days", "fraction", "time", "date", "bool", "code"]


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    kind: Kind = "text"


@dataclass(slots=True)
class Section:
    """One section as rows and columns: what every renderer but JSON draws."""

    key: str
    title: str
    facts: list[tuple[Column, Any]] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    note: str | None = None


def render(report: ComplianceReport, fmt: Format) -> str:
    """The report as text in ``fmt`` (one of :data:`FORMATS`).

    :raises ValueError: an unknown format.
    """
    renderers: dict[str, Callable[[ComplianceReport], str]] = {
        "json": _json, "csv": _csv, "md": _markdown, "html": _html,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    return renderers[fmt](report)


# -- the shared tabular view -------------------------------------------------------------


def _c(key: str, label: str, kind: Kind = "text") -> Column:
    return Column(key, label, kind)


def _rows(items: Sequence[object], columns: list[Column]) -> list[list[Any]]:
    return [[getattr(item, c.key) for c in columns] for item in items]


def _capped(shown: int, total: int, what: str) -> str | None:
    if shown >= total:
        return None
    return f"Showing the {shown} most recent of {total} {what}; the totals count them all."


def sections(report: ComplianceReport) -> list[Section]:
    """The report's sections in :data:`SECTIONS` order, as facts and tables."""
    titles = dict(SECTIONS)
    made = {s.key: s for s in (
        _stamp(report), _inventory(report), _rotations(report), _lifecycle(report),
        _secrets(report), _migrations(report), _failures(report), _encryptions(report),
        _integrity(report), _activity(report), _standards(report),
    )}
    for key, section in made.items():
        section.title = titles[key]
    return [made[key] for key, _ in SECTIONS]


def _stamp(r: ComplianceReport) -> Section:
    return Section("stamp", "", facts=[
        (_c("format", "Report format"), r.format),
        (_c("ledger_id", "Ledger id", "code"), r.ledger_id),
        (_c("built_from_seq", "Built from event seq", "int"), r.built_from_seq),
        (_c("built_from_head", "Built from head hash", "code"), r.built_from_head),
        (_c("generated_at", "Generated at (UTC)", "time"), r.generated_at),
        (_c("policy_days", "Cryptoperiod applied (days)", "int"), r.policy_days),
        (_c("recorded_policy_days", "Ledger's own rotation policy (days)", "days"),
         r.recorded_policy_days),
        (_c("listing_limit", "Entries kept per list", "int"), r.listing_limit),
    ], note="A projection of the ledger's events: rebuilding it at the same seq and time "
            "gives the same report. It holds metadata only, never a value or ciphertext.")


INVENTORY_COLUMNS = [
    _c("version", "Version", "int"), _c("algorithm", "Algorithm"), _c("origin", "Origin"),
    _c("status", "Status"), _c("created_at", "Created", "date"),
    _c("activated_at", "Became current", "date"), _c("rotated_at", "Rotated", "date"),
    _c("retired_at", "Retired", "date"), _c("destroy_after", "Destroy after", "date"),
    _c("destroyed_at", "Destroyed", "date"), _c("age_days", "Age (days)", "days"),
    _c("overdue", "Overdue", "bool"), _c("rotation_due", "Rotation due", "date"),
    _c("live_secrets", "Live secrets", "int"), _c("fingerprint", "Fingerprint", "code"),
]


def _inventory(r: ComplianceReport) -> Section:
    overdue = ", ".join(f"v{v}" for v in r.overdue_versions) or "none"
    return Section("inventory", "", facts=[
        (_c("versions", "Key versions", "int"), len(r.inventory)),
        (_c("current_version", "Current version", "int"), r.secrets.current_version),
        (_c("overdue_versions", "Overdue (active past the cryptoperiod)"), overdue),
    ], columns=INVENTORY_COLUMNS, rows=_rows(r.inventory, INVENTORY_COLUMNS),
        note=f"Age counts from when the ledger recorded the version; an active version older "
             f"than {r.policy_days} days is overdue for rotation.")


def _rotations(r: ComplianceReport) -> Section:
    columns = [
        _c("seq", "Seq", "int"), _c("occurred_at", "Time", "time"), _c("actor", "Actor"),
        _c("origin", "Origin"), _c("outcome", "Outcome"), _c("from_version", "From", "int"),
        _c("to_version", "To (requested)", "int"), _c("reason", "Reason"),
    ]
    return Section("rotations", "", facts=[
        (_c("rotations_total", "Rotation attempts", "int"), r.rotations_total),
        (_c("succeeded", "Succeeded", "int"), r.rotations_total - r.rejections_total),
        (_c("rejected", "Rejected", "int"), r.rejections_total),
    ], columns=columns, rows=_rows(r.rotations, columns),
        note=_capped(len(r.rotations), r.rotations_total, "rotation attempts"))


def _lifecycle(r: ComplianceReport) -> Section:
    columns = [
        _c("seq", "Seq", "int"), _c("occurred_at", "Time", "time"), _c("actor", "Actor"),
        _c("origin", "Origin"), _c("version", "Version", "int"), _c("action", "Action"),
        _c("detail", "Detail"),
    ]
    return Section("lifecycle", "", facts=[
        (_c("lifecycle_total", "Lifecycle actions", "int"), r.lifecycle_total),
    ], columns=columns, rows=_rows(r.lifecycle, columns),
        note=_capped(len(r.lifecycle), r.lifecycle_total, "lifecycle actions"))


def _secrets(r: ComplianceReport) -> Section:
    s = r.secrets
    columns = [_c("version", "Version", "int"), _c("status", "Status"),
               _c("live_secrets", "Live secrets", "int")]
    return Section("secrets", "", facts=[
        (_c("live_total", "Live secrets", "int"), s.live_total),
        (_c("current_version", "Current version", "int"), s.current_version),
        (_c("needing_migration", "On older versions (to migrate)", "int"), s.needing_migration),
        (_c("deleted", "Deleted secrets", "int"), s.deleted),
    ], columns=columns, rows=_rows(s.per_version, columns))


def _migrations(r: ComplianceReport) -> Section:
    columns = [
        _c("run_id", "Run", "code"), _c("target_version", "Target", "int"),
        _c("started_at", "Started", "time"), _c("ended_at", "Ended", "time"),
        _c("actor", "Actor"), _c("candidates", "Candidates", "int"),
        _c("migrated", "Migrated", "int"), _c("already_current", "Already current", "int"),
        _c("failed", "Failed", "int"), _c("status", "Status"), _c("resumes", "Resumes", "code"),
    ]
    return Section("migrations", "", facts=[
        (_c("migrations_total", "Migration runs", "int"), r.migrations_total),
    ], columns=columns, rows=_rows(r.migrations, columns),
        note=_capped(len(r.migrations), r.migrations_total, "runs"))


def _failures(r: ComplianceReport) -> Section:
    columns = [
        _c("seq", "Seq", "int"), _c("occurred_at", "Time", "time"), _c("actor", "Actor"),
        _c("origin", "Origin"), _c("kind", "Kind"), _c("subject", "Subject"),
        _c("detail", "Detail"),
    ]
    return Section("failures", "", facts=[
        (_c("failures_total", "Failed operations", "int"), r.failures_total),
    ], columns=columns, rows=_rows(r.failures, columns),
        note=_capped(len(r.failures), r.failures_total, "failures"))


def _encryptions(r: ComplianceReport) -> Section:
    columns = [
        _c("version", "Version", "int"), _c("encryptions", "Encryptions", "int"),
        _c("limit", "Limit (2^32)", "int"), _c("fraction_used", "Used", "fraction"),
        _c("flag", "Flag"),
    ]
    return Section("encryptions", "", columns=columns, rows=_rows(r.encryptions, columns),
                   note="NIST SP 800-38D: at most 2^32 encryptions per key with random 96-bit "
                        "nonces. Counted: writes, resets, restores, imports and migrations onto "
                        "each version. Flagged from half the limit.")


def _integrity(r: ComplianceReport) -> Section:
    i = r.integrity
    return Section("integrity", "", facts=[
        (_c("verified", "Verification result"), "verified" if i.ok else "FAILED"),
        (_c("event_range", "Event range checked"),
         f"{i.first_seq}..{i.last_seq}" if i.last_seq else "no events"),
        (_c("events", "Events", "int"), i.events),
        (_c("head", "Head hash", "code"), i.head),
        (_c("first_bad_seq", "First bad seq", "int"), i.first_bad_seq),
        (_c("problems", "Problems"), "; ".join(i.problems) or "none"),
        (_c("checkpoints", "Signed checkpoints", "int"), i.checkpoints),
        (_c("checkpoint_seq", "Latest checkpoint seq", "int"), i.checkpoint_seq),
        (_c("checkpoint_signed_at", "Latest checkpoint signed at", "time"), i.checkpoint_signed_at),
        (_c("checkpoint_covers_head", "Latest checkpoint covers the head", "bool"),
         i.checkpoint_covers_head),
        (_c("public_key", "Signing public key (Ed25519)", "code"), i.public_key),
        (_c("unreadable_events", "Unreadable events", "int"), i.unreadable_events),
    ], note="The hash chain was recomputed from seq 1 and SQLite's integrity check run; the "
            "latest checkpoint's signature was checked. Compare the head hash and key with an "
            "anchor kept elsewhere (`keyledger audit anchor`) to rule out a cut tail.")


def _activity(r: ComplianceReport) -> Section:
    columns = [_c("type", "Event type", "code"), _c("count", "Events", "int")]
    return Section("activity", "", facts=[
        (_c("events", "Events recorded", "int"), sum(a.count for a in r.activity)),
    ], columns=columns, rows=_rows(r.activity, columns))


def _standards(r: ComplianceReport) -> Section:
    titles = dict(SECTIONS)
    columns = [_c("standard", "Standard"), _c("requirement", "Requirement"),
               _c("sections", "Evidenced by"), _c("evidence", "How")]
    rows = [[s.standard, s.requirement, ", ".join(titles[k] for k in s.sections), s.evidence]
            for s in r.standards]
    return Section("standards", "", columns=columns, rows=rows,
                   note="Our own summary of which section of this report supports which "
                        "requirement; it is evidence for an assessor, not a certification.")


# -- display -----------------------------------------------------------------------------


def display(value: Any, kind: Kind) -> str:
    """A value as people read it (None is an empty cell)."""
    if value is None:
        return ""
    if kind == "bool" or isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "days":
        return f"{float(value):.1f}"
    if kind == "fraction":
        pct = float(value) * 100
        return "0%" if pct == 0 else f"{pct:.3g}%"
    if kind == "time":  # UTC, as every time in the ledger
        return str(value).replace("T", " ")[:19]
    if kind == "date":
        return str(value)[:10]
    if kind == "int" and isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- JSON, CSV, Markdown -------------------------------------------------------------------


def _json(report: ComplianceReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text  # a spreadsheet would evaluate it as a formula
    return text


def _csv(report: ComplianceReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for section in sections(report):
        for column, value in section.facts:
            writer.writerow([section.key, "", column.key, _csv_cell(value)])
        for number, row in enumerate(section.rows, 1):
            for column, value in zip(section.columns, row, strict=True):
                writer.writerow([section.key, str(number), column.key, _csv_cell(value)])
    return out.getvalue()


def _md_cell(text: str) -> str:
    # Escaped as HTML so a Markdown viewer shows user text literally and runs none of it.
    return escape(text).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _markdown(report: ComplianceReport) -> str:
    lines = [
        "# keyledger compliance report", "",
        f"Ledger `{_md_cell(report.ledger_id)}`, built from event seq {report.built_from_seq} "
        f"(head `{report.built_from_head}`) at {display(report.generated_at, 'time')}. "
        f"Verification: **{'verified' if report.integrity.ok else 'FAILED'}**.", "",
    ]
    for section in sections(report):
        lines += [f"## {section.title}", ""]
        for column, value in section.facts:
            lines.append(f"- {column.label}: {_md_cell(display(value, column.kind)) or '-'}")
        if section.facts:
            lines.append("")
        if section.columns:
            if section.rows:
                lines.append("| " + " | ".join(c.label for c in section.columns) + " |")
                lines.append("|" + "|".join("---" for _ in section.columns) + "|")
                for row in section.rows:
                    cells = [_md_cell(display(v, c.kind)) for c, v in zip(section.columns, row, strict=True)]
                    lines.append("| " + " | ".join(cells) + " |")
            else:
                lines.append("_None recorded._")
            lines.append("")
        if section.note:
            lines += [f"_{_md_cell(section.note)}_", ""]
    return "\n".join(lines)


# -- HTML ----------------------------------------------------------------------------------

_STYLE = """
:root{color-scheme:light}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1f2328;background:#fff;margin:0}
main{max-width:1320px;margin:0 auto;padding:20px 20px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;padding-bottom:4px;
 border-bottom:1px solid #d0d7de}
.meta{color:#57606a;margin:0 0 16px}
code,.code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;
 word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;font-weight:600;
 color:#fff}
.ok{background:#1a7f37}.bad{background:#cf222e}.warn{background:#bc4c00}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{flex:1 1 0;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;min-width:100px}
.card b{display:block;font-size:22px}.card span{color:#57606a;font-size:12px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:8px 0;font-size:12px}
th,td{border:1px solid #d0d7de;padding:4px 5px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.t{white-space:nowrap;font-variant-numeric:tabular-nums}
tr.overdue td{background:#fff1e5}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:8px 0}
dt{color:#57606a}dd{margin:0}
.note{color:#57606a;font-size:12.5px;margin:4px 0 0}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start;margin:8px 0 0}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px}
figcaption{font-weight:600;font-size:13px;margin:0 0 6px}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
@media print{main{max-width:none}h2{break-after:avoid}}
"""
_CELL_CLASS = {"int": "num", "days": "num", "fraction": "num", "time": "t", "date": "t"}
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _html_value(value: Any, column: Column) -> str:
    text = display(value, column.kind)
    if column.key == "status" and text in STATUS_COLOURS:  # may break after its hyphens
        label = "-<wbr>".join(_e(part) for part in text.split("-"))
        return f'<span class="badge" style="background:{STATUS_COLOURS[text]}">{label}</span>'
    if column.kind == "bool" and column.key == "overdue" and value:
        return '<span class="badge bad">OVERDUE</span>'
    if column.key == "flag" and text != "ok":
        return f'<span class="badge warn">{_e(text)}</span>'
    if column.key in ("outcome", "verified"):
        good = text in ("success", "verified")
        return f'<span class="badge {"ok" if good else "bad"}">{_e(text)}</span>'
    if column.key == "fingerprint" and len(text) > 8:  # in full in JSON and CSV
        return f'<code title="{_e(text)}">{_e(text[:8])}…</code>'
    if column.kind == "code" and text:
        return f"<code>{_e(text)}</code>"
    return _e(text)


def _td(content: str, css: str | None) -> str:
    return f'<td class="{css}">{content}</td>' if css else f"<td>{content}</td>"


def _html_section(section: Section) -> list[str]:
    parts = [f'<section id="{_e(section.key)}">', f"<h2>{_e(section.title)}</h2>"]
    if section.facts:
        parts.append("<dl>")
        for column, value in section.facts:
            parts.append(f"<dt>{_e(column.label)}</dt><dd>{_html_value(value, column) or '-'}</dd>")
        parts.append("</dl>")
    if section.columns:
        if section.rows:
            parts.append('<div class="scroll"><table><thead><tr>'
                         + "".join(f"<th>{_e(c.label)}</th>" for c in section.columns)
                         + "</tr></thead><tbody>")
            overdue_at = next((i for i, c in enumerate(section.columns) if c.key == "overdue"), None)
            for row in section.rows:
                marked = overdue_at is not None and row[overdue_at] is True
                cells = "".join(_td(_html_value(v, c), _CELL_CLASS.get(c.kind))
                                for c, v in zip(section.columns, row, strict=True))
                parts.append(f'<tr class="overdue">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
            parts.append("</tbody></table></div>")
        else:
            parts.append('<p class="note">None recorded.</p>')
    if section.note:
        parts.append(f'<p class="note">{_e(section.note)}</p>')
    parts.append("</section>")
    return parts


def _html(report: ComplianceReport) -> str:
    i = report.integrity
    verdict = ('<span class="badge ok">ledger verified</span>' if i.ok
               else '<span class="badge bad">ledger does NOT verify</span>')
    cards = [
        (len(report.inventory), "key versions"), (report.secrets.current_version, "current version"),
        (len(report.overdue_versions), "overdue versions"), (report.secrets.live_total, "live secrets"),
        (report.secrets.needing_migration, "to migrate"),
        (report.rotations_total - report.rejections_total, "rotations"),
        (report.rejections_total, "rejected rotations"), (report.failures_total, "failed operations"),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>keyledger compliance report: {_e(report.ledger_id)} at seq "
        f"{report.built_from_seq}</title>",
        f"<style>{_STYLE}</style></head><body><main>",
        "<h1>keyledger compliance report</h1>",
        f'<p class="meta">Ledger <code>{_e(report.ledger_id)}</code> · built from event seq '
        f"{report.built_from_seq}, head <code>{_e(report.built_from_head[:16])}…</code> · "
        f"generated {_e(display(report.generated_at, 'time'))} UTC (all times are UTC) · "
        f"{verdict}</p>",
        '<div class="cards">' + "".join(
            f'<div class="card"><b>{_e(display(v, "int")) or "-"}</b><span>{_e(label)}</span></div>'
            for v, label in cards) + "</div>",
        f'<div class="charts">{bar_chart(report)}{timeline(report)}</div>',
    ]
    for section in sections(report):
        parts += _html_section(section)
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
