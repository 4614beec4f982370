"""The read models (and a health check) as Prometheus metrics, in the text exposition
format node_exporter's textfile collector reads (``--format prometheus``).

Every family carries ``# HELP`` and ``# TYPE``; label values are escaped as the format
says (``\\``, ``"`` and a line break); a sample is ``name{labels} value``. Times are Unix
seconds, ages seconds, as Prometheus' conventions want (``_seconds``,
``_timestamp_seconds``, ``_total`` for counters).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ledger.domain import parse_time
from projections.read_models.keys import KeyringInfo
from projections.reports.metrics import RotationMetric

#: AES-GCM with random 96-bit nonces: at most 2^32 encryptions under one key (NIST SP
#: 800-38D, 8.3), the limit ``keyledger`` enforces per key version.
ENCRYPTION_LIMIT = 2**32

Kind = Literal["gauge", "counter"]


@dataclass(slots=True)
class Family:
    name: str
    kind: Kind
    help: str
    samples: list[tuple[Mapping[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self


def render(families: Iterable[Family]) -> str:
    """The exposition text, one family after the other, ending in a line break."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            shown = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{family.name}{{{shown}}} {_number(value)}" if shown
                         else f"{family.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def ledger_families(keyring: KeyringInfo, needing_migration: int,
                    runs: Sequence[RotationMetric], head_seq: int, now: datetime
                    ) -> list[Family]:
    """What a dashboard of one ledger needs, from its read models (no password)."""
    current = Family("keyledger_key_version_current", "gauge",
                     "The key version new values are encrypted under.")
    if keyring.current_version is not None:
        current.add(keyring.current_version)
    secrets = Family("keyledger_secrets", "gauge", "Live secrets stored under each key version.")
    age = Family("keyledger_key_age_seconds", "gauge", "Seconds since each key version was created.")
    encryptions = Family("keyledger_key_encryptions_total", "counter",
                         "Encryptions made under each key version (its AES-GCM nonces).")
    status = Family("keyledger_key_status", "gauge",
                    "1 for each key version's status (active, decrypt-only, retired, destroyed...).")
    for v in keyring.versions:
        label = str(v.version)
        secrets.add(v.secrets, key_version=label)
        age.add(max(0.0, (now - parse_time(v.created_at)).total_seconds()), key_version=label)
        encryptions.add(v.encryptions, key_version=label)
        status.add(1, key_version=label, status=v.status)
    rotated = [parse_time(v.created_at) for v in keyring.versions if v.version == keyring.current_version]
    last_rotation = Family("keyledger_last_rotation_timestamp_seconds", "gauge",
                           "When the current key version became current (its creation).")
    if rotated:
        last_rotation.add(rotated[0].timestamp())
    finished = [parse_time(r.rotation_end) for r in runs if r.rotation_end is not None]
    last_migration = Family("keyledger_last_migration_timestamp_seconds", "gauge",
                            "When the last migration run completed.")
    if finished:
        last_migration.add(max(finished).timestamp())
    by_status = Family("keyledger_migration_runs", "gauge",
                       "Migration runs by status (success, partial, resumed, incomplete).")
    for name in ("success", "partial", "resumed", "incomplete"):
        by_status.add(sum(1 for r in runs if r.status == name), status=name)
    return [
        current, secrets,
        Family("keyledger_secrets_needing_migration", "gauge",
               "Live secrets not on the current key version.").add(needing_migration),
        age, encryptions,
        Family("keyledger_key_encryption_limit", "gauge",
               "The most encryptions one key version may make (2^32, random nonces).").add(
            ENCRYPTION_LIMIT),
        status, last_rotation, last_migration, by_status,
        Family("keyledger_ledger_events", "gauge",
               "Events in the ledger (its head seq), as the read models have applied them.").add(
            head_seq),
    ]


def health_families(checks: Sequence[tuple[str, str]], healthy: bool, verified_seq: int | None,
                    now: datetime) -> list[Family]:
    """A health check's outcome: overall, each check's status, the seq it verified."""
    each = Family("keyledger_health_check", "gauge",
                  "1 for each check's status (ok, warn, fail) in the last health check.")
    for name, outcome in checks:
        each.add(1, check=name, status=outcome)
    families = [
        Family("keyledger_health_status", "gauge",
               "1 if the last health check found the ledger healthy, else 0.").add(int(healthy)),
        each,
        Family("keyledger_health_check_timestamp_seconds", "gauge",
               "When the last health check ran.").add(now.timestamp()),
    ]
    verified = Family("keyledger_last_verified_seq", "gauge",
                      "The head seq whose signature the last health check verified.")
    if verified_seq is not None:
        verified.add(verified_seq)
    families.append(verified)
    return families


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 2**53):
        return str(int(value))
    return repr(float(value))
