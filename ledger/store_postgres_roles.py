"""Who can do what on a PostgreSQL ledger: three group roles and their grants.

``keyledger roles create`` runs (or, with ``--print``, prints) :func:`roles_sql`. The
roles are NOLOGIN groups; an administrator grants them to login roles
(``GRANT keyledger_app TO web``). None of them owns a table: the owner is whoever ran
``init``, and is the only one who can alter the schema, drop a trigger or run VACUUM FULL.

- **app**: reads secrets (with the master password: the ciphertexts and wrapped keys are
  useless without it). It cannot append, so on a ledger with read auditing on, its reads
  fail closed: a read that cannot be recorded serves nothing.
- **operator**: every command. It may append events and checkpoints but never change or
  remove one: no UPDATE, DELETE or TRUNCATE on ``events`` or ``checkpoints``.
- **auditor**: the commands that need no master password (``audit verify``, ``audit log``,
  ``replay``, ``incident``, ``export``, ``info``, ``report``). No access to ``keys``, and
  the rows of ``meta`` that could test a password guess or hold a key (the wrapped signing
  key, the KEK check) are hidden from it by row-level security.
"""

from __future__ import annotations

from ledger.store import COPY_TABLES

DEFAULT_PREFIX = "keyledger_"
#: The rows of ``meta`` the auditor role does not see.
HIDDEN_META = ("signing_key", "kek_check")
_READ_MODELS = ("proj_checkpoint", "proj_key_versions", "proj_keyring", "proj_secrets",
                "proj_secret_counts", "proj_migration_runs")


def role_names(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    return {kind: f"{prefix}{kind}" for kind in ("app", "operator", "auditor")}


def roles_sql(schema: str, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The statements that create the three roles (where missing) and grant them their
    rights on ``schema``: safe to run again."""
    names = role_names(prefix)
    app, operator, auditor = names["app"], names["operator"], names["auditor"]
    ledger_tables = [f"{schema}.{t}" for t in COPY_TABLES]
    read_models = [f"{schema}.{t}" for t in _READ_MODELS]
    appended = [f"{schema}.events", f"{schema}.checkpoints"]
    indexes = [f"{schema}.streams", f"{schema}.heads_tree"]
    kept = [*indexes, f"{schema}.keys", f"{schema}.meta"]
    hidden = ", ".join(f"'{key}'" for key in HIDDEN_META)
    statements = [
        f"""DO $roles$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} NOLOGIN;
            END IF; END $roles$"""
        for role in names.values()
    ]
    statements += [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {schema} TO {app}, {operator}, {auditor}",
        # app: what a proven read needs.
        f"GRANT SELECT ON {', '.join([*ledger_tables, *read_models])} TO {app}",
        # operator: appends, and keeps the indexes, keys and read models.
        f"GRANT SELECT, INSERT ON {', '.join(appended)} TO {operator}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(kept + read_models)} TO {operator}",
        f"GRANT UPDATE ON {schema}.append_lock TO {operator}",
        # auditor: everything but the keys; meta without what tests a password.
        f"GRANT SELECT ON {', '.join([*appended, *indexes, *read_models])}, {schema}.meta "
        f"TO {auditor}",
        f"ALTER TABLE {schema}.meta ENABLE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS keyledger_meta_all ON {schema}.meta",
        f"DROP POLICY IF EXISTS keyledger_meta_public ON {schema}.meta",
        f"CREATE POLICY keyledger_meta_all ON {schema}.meta TO {app}, {operator} "
        "USING (true) WITH CHECK (true)",
        f"CREATE POLICY keyledger_meta_public ON {schema}.meta FOR SELECT TO {auditor} "
        f"USING (key NOT IN ({hidden}))",
    ]
    return statements
