"""What is PostgreSQL's own: naming a ledger, the append-only triggers, the server's
faults (refused, wrong password, missing or foreign schema, a restart, a killed client),
copying between backends, and what reaches the server's files.

The shared contract (the recorder, the read models, the CLI) runs on both backends
through the ``backend`` fixture; these tests are about the server itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_support
import pytest
from cli_support import PASSWORD as CLI_PASSWORD
from cli_support import document, error_line, invoke
from tamper_support import contents, plain_rows, plain_sql, rewrite_rows

from ledger import Ledger, LedgerFormatError
from ledger.integrity import verify_ledger
from ledger.store_postgres import POSTGRES_LAYOUT, PostgresRecorder, split_target
from ledger.store_read_models import read_model_tables
from ledger.testing import child_environment, create_test_ledger, keyledger_command
from projections import projector
from projections.read_models.runner import layout_fingerprint

VALUE = "pg-plaintext-never-on-the-server-7c1e"


@pytest.fixture
def url(pg_cluster: pg_support.Cluster) -> str:
    """A ledger (key version 1, one secret) in a fresh schema, for the CLI."""
    target = pg_cluster.url()
    with create_test_ledger(target, CLI_PASSWORD, projector=projector()) as ledger:
        ledger.set("db_password", VALUE)
    return target


def run_cli(target: str, *args: str, password: str | None = CLI_PASSWORD,
            cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = child_environment(KEYLEDGER_DB=target, **env)
    if password is not None:
        environment["ENCRYPTION_MASTER_PASSWORD"] = password
    return subprocess.run([*keyledger_command(), *args], env=environment, capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- naming a ledger -------------------------------------------------------------------


def test_the_schema_is_keyledgers_own_parameter() -> None:
    """``schema`` is taken out of what libpq sees, from a URL and a keyword string alike;
    anything but a plain lower-case name is refused."""
    assert split_target("postgresql://app@db/secrets?schema=prod&sslmode=require") == (
        "postgresql://app@db/secrets?sslmode=require", "prod")
    assert split_target("host=db dbname=secrets schema=prod user=app") == (
        "host=db dbname=secrets  user=app", "prod")
    assert split_target("postgresql://app@db/secrets")[1] == "keyledger"
    for bad in ("Prod", "a;drop", "x y", "", "1abc"):
        with pytest.raises(LedgerFormatError, match="plain lower-case name"):
            split_target(f"postgresql://app@db/secrets?schema={bad}")


def test_one_database_holds_several_ledgers(pg_cluster: pg_support.Cluster) -> None:
    """Two schemas of one database are two ledgers, each with its own keys and events."""
    first, second = pg_cluster.url(), pg_cluster.url()
    with create_test_ledger(first, "one") as a, create_test_ledger(second, "two") as b:
        a.set("x", "from a")
        b.set("x", "from b")
    with Ledger.open(first, "one") as a, Ledger.open(second, "two") as b:
        assert (a.get("x").value, b.get("x").value) == ("from a", "from b")
        assert a.session.meta.ledger_id != b.session.meta.ledger_id


def test_init_creates_the_schema_and_again_changes_nothing(pg_cluster: pg_support.Cluster) -> None:
    """``init`` on a URL whose schema does not exist creates it; a second ``init`` says so
    and appends nothing."""
    target = pg_cluster.url()
    created = run_cli(target, "init", "--json")
    assert created.returncode == 0, created.stderr
    again = run_cli(target, "init", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["created"] is False
    assert plain_rows(target, "SELECT count(*) FROM events")[0][0] == 4


# -- faults, each one line -------------------------------------------------------------


def test_a_refused_connection_is_one_line(tmp_path: Path) -> None:
    """No server at the socket: one line naming the server, exit 1."""
    result = run_cli(f"postgresql://nobody@/db?host={tmp_path}&schema=x", "info")
    assert result.returncode == 1
    assert "cannot reach the PostgreSQL server" in one_line(result)


def test_a_wrong_database_password_is_one_line(pg_cluster: pg_support.Cluster, url: str) -> None:
    """A login role with a password: the wrong one (PGPASSWORD) is one line, the right one
    works; neither password is ever printed."""
    pg_cluster.admin_sql("DROP ROLE IF EXISTS kl_login")
    pg_cluster.admin_sql("CREATE ROLE kl_login LOGIN SUPERUSER PASSWORD 'right-pg-pass'")
    as_login = url.replace("keyledger_admin@", "kl_login@")
    wrong = run_cli(as_login, "info", PGPASSWORD="wrong-pg-pass")
    assert wrong.returncode == 1
    assert "refused the login" in one_line(wrong)
    assert "wrong-pg-pass" not in wrong.stderr + wrong.stdout
    right = run_cli(as_login, "secrets", "get", "db_password", PGPASSWORD="right-pg-pass")
    assert right.returncode == 0 and right.stdout.strip() == VALUE


def test_a_missing_or_foreign_schema_is_one_line(pg_cluster: pg_support.Cluster) -> None:
    """A schema that does not exist says to run init; one that holds other tables is
    refused, by ``init`` too, and left as it was."""
    missing = run_cli(pg_cluster.url(), "info")
    assert missing.returncode == 1 and "does not exist" in one_line(missing)
    foreign = pg_cluster.url()
    schema = split_target(foreign)[1]
    pg_cluster.admin_sql(f"CREATE SCHEMA {schema}")
    pg_cluster.admin_sql(f"CREATE TABLE {schema}.orders (id int)")
    for args in (("info",), ("init",)):
        result = run_cli(foreign, *args)
        assert result.returncode == 1 and "not a keyledger ledger" in one_line(result), args
    assert pg_cluster.admin_sql(
        f"SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
    ) == [(1,)]


def test_a_wrong_master_password_changes_nothing(url: str) -> None:
    before = plain_rows(url, "SELECT count(*), max(seq) FROM events")
    result = run_cli(url, "secrets", "set", "x", "--value", "v", password="not it")
    assert result.returncode == 1 and "password" in one_line(result)
    assert plain_rows(url, "SELECT count(*), max(seq) FROM events") == before


def test_a_client_killed_mid_transaction_leaves_no_partial_rows(url: str, tmp_path: Path) -> None:
    """SIGKILL while an import's one transaction is open: the server rolls it back, the
    ledger verifies as before, and the next writer does not wait for a lock."""
    entries = {f"k{i:05}": f"value {i}" for i in range(30_000)}
    source = tmp_path / "many.json"
    source.write_text(json.dumps(entries), encoding="utf-8")
    before = plain_rows(url, "SELECT count(*), max(seq) FROM events")
    environment = child_environment(KEYLEDGER_DB=url, ENCRYPTION_MASTER_PASSWORD=CLI_PASSWORD)
    child = subprocess.Popen([*keyledger_command(), "secrets", "import", str(source)],
                             env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    schema = split_target(url)[1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        holding = plain_rows(url, "SELECT count(*) FROM pg_locks l JOIN pg_class c "
                                  "ON c.oid = l.relation JOIN pg_namespace n "
                                  "ON n.oid = c.relnamespace WHERE c.relname = 'append_lock' "
                                  "AND n.nspname = ? AND l.granted", (schema,))
        if holding[0][0]:
            time.sleep(0.3)  # inside the transaction, some chunks sent
            break
        time.sleep(0.01)
    assert child.poll() is None, "the import ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    time.sleep(0.2)  # the server notices the closed socket and rolls back
    assert plain_rows(url, "SELECT count(*), max(seq) FROM events") == before
    assert plain_rows(url, "SELECT count(*) FROM proj_secrets")[0][0] == 1
    started = time.monotonic()
    assert invoke(url, "--lock-timeout", "5", "secrets", "set", "after", "--value", "v").exit_code == 0
    assert time.monotonic() - started < 5
    with PostgresRecorder(url, read_only=True) as recorder:
        assert verify_ledger(recorder).ok


@pytest.fixture
def own_cluster() -> Iterator[pg_support.Cluster]:
    """A cluster of the test's own, which it may restart."""
    why = pg_support.why_unavailable()
    if why is not None:
        pytest.fail(why) if os.environ.get("CI") == "true" else pytest.skip(why)
    with pg_support.running_cluster() as cluster:
        yield cluster


def test_a_server_restart_during_migrate_fails_in_one_line_and_a_rerun_completes(
    own_cluster: pg_support.Cluster, tmp_path: Path
) -> None:
    """``pg_ctl restart -m immediate`` while migrate runs: the command fails with one clear
    line, whatever committed stays, and running it again migrates the rest, nothing lost."""
    target = own_cluster.url()
    entries = {f"k{i:05}": f"value {i}" for i in range(20_000)}
    source = tmp_path / "many.json"
    source.write_text(json.dumps(entries), encoding="utf-8")
    with create_test_ledger(target, CLI_PASSWORD, projector=projector()):
        pass
    assert run_cli(target, "secrets", "import", str(source)).returncode == 0
    assert run_cli(target, "rotate", "--yes").returncode == 0
    environment = child_environment(KEYLEDGER_DB=target, ENCRYPTION_MASTER_PASSWORD=CLI_PASSWORD)
    start = plain_rows(target, "SELECT max(seq) FROM events")[0][0]
    child = subprocess.Popen([*keyledger_command(), "migrate", "--yes", "--batch-size", "100"],
                             env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if plain_rows(target, "SELECT max(seq) FROM events")[0][0] > start + 300:
            break
        time.sleep(0.005)
    assert child.poll() is None, "migrate ended before the restart"
    own_cluster.restart_immediately()
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "PostgreSQL" in lines[0] and ("lost" in lines[0] or "restart" in lines[0]), lines[0]
    rerun = run_cli(target, "migrate", "--yes", "--json")
    assert rerun.returncode == 0, rerun.stderr
    done = json.loads(rerun.stdout)
    assert done["migrated"] > 0 and done["failed"] == 0
    with Ledger.open(target, CLI_PASSWORD, seen=None) as ledger:
        assert ledger.report().needing_migration == 0
        for name in ("k00000", "k09999", "k19999"):
            assert ledger.get(name).value == entries[name]
        assert len(ledger.secrets()) == len(entries)
        assert verify_ledger(ledger.recorder).ok


# -- append-only, by trigger -----------------------------------------------------------


def verify_json(target: str) -> dict[str, object]:
    result = invoke(target, "audit", "verify", "--json", password=None)
    assert result.exit_code == (0 if document(result)["ok"] else 1)
    return dict(document(result))


def test_truncate_update_and_delete_are_refused(url: str) -> None:
    """Even the schema's owner, using SQL normally, cannot rewrite events or checkpoints."""
    for table in ("events", "checkpoints"):
        for sql in (f"TRUNCATE {table}", f"UPDATE {table} SET seq = seq",
                    f"DELETE FROM {table}"):
            with pytest.raises(Exception, match="append-only"):
                plain_sql(url, sql)
    assert verify_json(url)["ok"] is True


@pytest.mark.parametrize("tamper, fault", [
    ("DROP TRIGGER events_no_update ON events", "missing"),
    ("ALTER TABLE events DISABLE TRIGGER events_no_update", "altered"),
    ("CREATE OR REPLACE FUNCTION keyledger_append_only() RETURNS trigger LANGUAGE plpgsql "
     "AS $$ BEGIN RETURN NEW; END $$", "altered"),
])
def test_audit_verify_names_an_append_only_trigger_dropped_disabled_or_emptied(
    url: str, tamper: str, fault: str
) -> None:
    """The events still verify, but audit verify exits 1 naming the trigger."""
    plain_sql(url, tamper)
    doc = verify_json(url)
    assert doc["ok"] is False
    faults = {(f["name"], f["fault"]) for f in doc["trigger_faults"]}  # type: ignore[attr-defined]
    assert ("events_no_update", fault) in faults


def test_a_foreign_trigger_on_a_ledger_table_is_reported(url: str) -> None:
    plain_sql(url, "CREATE FUNCTION spy() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RETURN NEW; END $$",
              "CREATE TRIGGER copy_keys AFTER UPDATE ON keys FOR EACH ROW EXECUTE FUNCTION spy()")
    doc = verify_json(url)
    assert {"name": "copy_keys", "table": "keys", "fault": "foreign"} in doc["trigger_faults"]  # type: ignore[operator]


def test_the_read_models_layout_is_known(url: str) -> None:
    """A change to the read models' tables on PostgreSQL fails here until
    POSTGRES_LAYOUT is updated."""
    with PostgresRecorder(url) as recorder:
        assert layout_fingerprint(read_model_tables(recorder).schema()) == POSTGRES_LAYOUT


# -- copies between backends -----------------------------------------------------------


def test_sqlite_to_postgresql_and_back_verifies_with_the_same_head(
    pg_cluster: pg_support.Cluster, tmp_path: Path
) -> None:
    """A ledger moved SQLite -> PostgreSQL -> SQLite: the same head, and ``audit verify
    --pubkey`` passes on all three; the values open on each."""
    first = tmp_path / "first.db"
    with create_test_ledger(first, CLI_PASSWORD, projector=projector()) as ledger:
        for i in range(30):
            ledger.set(f"s{i}", f"v{i}")
        ledger.rotate()
        ledger.migrate(batch_size=7)
        ledger.delete("s3")
    pubkey = document(invoke(first, "audit", "pubkey", "--json", password=None))["public_key"]
    server = pg_cluster.url()
    last = tmp_path / "last.db"
    for source, dest in ((str(first), server), (server, str(last))):
        copied = run_cli("", "copy", source, dest, "--pubkey", pubkey, "--json", password=None)
        assert copied.returncode == 0, copied.stderr
    heads = []
    for target in (str(first), server, str(last)):
        doc = document(invoke(target, "audit", "verify", "--pubkey", pubkey, "--json", password=None))
        assert doc["ok"] is True, (target, doc["problems"])
        heads.append((doc["events"], doc["head"]))
        with Ledger.open(target, CLI_PASSWORD, seen=None) as ledger:
            assert ledger.get("s29").value == "v29" and ledger.report().needing_migration == 0
    assert heads[0] == heads[1] == heads[2]


def test_copy_refuses_a_destination_that_holds_something(url: str, tmp_path: Path) -> None:
    out = tmp_path / "copy.db"
    assert run_cli("", "copy", url, str(out), password=None).returncode == 0
    again = run_cli("", "copy", url, str(out), password=None)
    assert again.returncode == 1 and "already holds a ledger" in one_line(again)
    back = run_cli("", "copy", str(out), url, password=None)
    assert back.returncode == 1 and "already holds a ledger" in one_line(back)


def test_copy_refuses_a_source_that_does_not_verify(url: str, tmp_path: Path) -> None:
    """Nothing unchecked is carried: a rewritten event stops the copy, and nothing is
    written at the destination."""
    from tamper_support import rewrite_rows

    rewrite_rows(url, "UPDATE events SET actor = 'mallory' WHERE seq = 2")
    out = tmp_path / "copy.db"
    result = run_cli("", "copy", url, str(out), password=None)
    assert result.returncode == 1 and "nothing was copied" in one_line(result)
    assert not out.exists()


def test_a_backup_of_a_server_ledger_is_the_portable_file(url: str, tmp_path: Path) -> None:
    """``backup`` of a PostgreSQL ledger writes a SQLite file that verify-backup checks
    (values included), recorded in the server's ledger."""
    out = tmp_path / "backup.db"
    taken = invoke(url, "backup", "--out", str(out), "--json")
    assert taken.exit_code == 0, taken.stderr
    checked = invoke(out, "verify-backup", str(out), "--json")
    assert checked.exit_code == 0 and document(checked)["decrypted"] == 1
    assert plain_rows(url, "SELECT type FROM events ORDER BY seq DESC LIMIT 1")[0][0] == "BackupTaken"
    assert (os.stat(out).st_mode & 0o777) == 0o600


def test_restore_onto_a_server_replaces_its_rows_in_one_step(url: str, tmp_path: Path) -> None:
    """A backup restored onto the schema it came from: refused while it would lose an
    event, then with --force the schema holds the backup's events and its LedgerRestored,
    verifies, and its read models agree; the tables' triggers are as keyledger made them."""
    out = tmp_path / "backup.db"
    assert invoke(url, "backup", "--out", str(out)).exit_code == 0
    assert invoke(url, "secrets", "set", "db_password", "--value", "newer").exit_code == 0
    refused = invoke(url, "restore", str(out), "--yes")
    assert refused.exit_code == 1 and "not a prefix" in error_line(refused)
    done = invoke(url, "restore", str(out), "--yes", "--force", "--json")
    assert done.exit_code == 0, done.stderr
    assert document(done)["events_restored"] < document(done)["events_before"]
    assert invoke(url, "secrets", "get", "db_password").stdout.strip() == VALUE
    assert invoke(url, "audit", "verify", password=None).exit_code == 0
    assert invoke(url, "health-check", "--deep").exit_code == 0
    assert plain_rows(url, "SELECT type FROM events ORDER BY seq DESC LIMIT 1")[0][0] == "LedgerRestored"
    with PostgresRecorder(url) as recorder:
        assert recorder.trigger_faults() == []


def test_a_write_while_restoring_onto_a_server_is_kept(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replacement checks, under the writers' lock, that the ledger still ends where
    the restore checked it: a write landing meanwhile is kept and nothing is restored."""
    from ledger import backup

    out = tmp_path / "backup.db"
    assert invoke(url, "backup", "--out", str(out)).exit_code == 0
    staged = backup._staged

    def and_a_write_lands(*args: Any) -> Any:
        result = staged(*args)
        with Ledger.open(url, CLI_PASSWORD) as other:
            other.set("db_password", "written meanwhile")
        return result

    monkeypatch.setattr(backup, "_staged", and_a_write_lands)
    with pytest.raises(LedgerFormatError, match="written to while restoring"):
        backup.restore(out, url, CLI_PASSWORD, projector=projector())
    with Ledger.open(url, CLI_PASSWORD) as ledger:
        assert ledger.get("db_password").value == "written meanwhile"
        assert ledger.recorder.stream_head("backups").type == "BackupTaken"  # type: ignore[union-attr]


def test_restore_refuses_a_forged_backup_even_forced_over_a_ledger_that_does_not_open(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy built under this ledger's id with another signing key is a forgery, whether
    or not the ledger it would replace still opens (attack on restore, finding 1)."""
    import uuid

    with Ledger.open(url, CLI_PASSWORD) as ledger:
        ledger_id = ledger.recorder.read_meta().ledger_id
    forged = tmp_path / "forged.db"
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(hex=ledger_id))
    with create_test_ledger(forged, CLI_PASSWORD) as other:
        other.set("db_password", "planted")
    monkeypatch.undo()
    rewrite_rows(url, "UPDATE events SET actor = 'mallory' WHERE seq = (SELECT max(seq) FROM events)")
    before = contents(url)
    refused = invoke(url, "restore", str(forged), "--yes", "--force")
    assert refused.exit_code == 1 and "forgery" in error_line(refused)
    assert contents(url) == before


def test_restore_refuses_while_a_foreign_trigger_is_on_the_ledger(url: str, tmp_path: Path) -> None:
    """A trigger someone added (even switched off) would run inside the replacement, or be
    switched on by it: refused in one line, nothing changed (finding 3)."""
    out = tmp_path / "backup.db"
    assert invoke(url, "backup", "--out", str(out)).exit_code == 0
    plain_sql(url, """CREATE FUNCTION meddle() RETURNS trigger LANGUAGE plpgsql AS $$
                      BEGIN NEW.actor := 'mallory'; RETURN NEW; END $$""",
              "CREATE TRIGGER meddle BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION meddle()",
              "ALTER TABLE events DISABLE TRIGGER meddle")
    before = contents(url)
    refused = invoke(url, "restore", str(out), "--yes", "--force")
    assert refused.exit_code == 1 and "triggers are not as keyledger made them" in error_line(refused)
    assert contents(url) == before
    assert plain_rows(url, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'meddle'") == [("D",)]


def test_a_killed_restores_staging_folder_is_removed_by_the_next(url: str, tmp_path: Path) -> None:
    """The staging copy holds the whole ledger, wrapped keys included: a folder a killed
    restore left goes with the next restore, and a finished one leaves none (finding 4)."""
    import tempfile

    from ledger.backup import SERVER_STAGING

    out = tmp_path / "backup.db"
    assert invoke(url, "backup", "--out", str(out)).exit_code == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = Path(tempfile.gettempdir()) / f"{SERVER_STAGING}{os.getuid()}-{dead.pid}"
    left.mkdir(mode=0o700)
    (left / "staging.db").write_bytes(b"a whole ledger")
    assert invoke(url, "restore", str(out), "--yes").exit_code == 0
    assert not left.exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"{SERVER_STAGING}{os.getuid()}-*"))


def test_restore_into_an_empty_schema_creates_the_ledger(url: str, pg_cluster: pg_support.Cluster,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "backup.db"
    assert invoke(url, "backup", "--out", str(out)).exit_code == 0
    fresh = pg_cluster.url()
    done = invoke(fresh, "restore", str(out), "--yes", "--json")
    assert done.exit_code == 0, done.stderr
    assert document(done)["events_before"] == 0
    assert invoke(fresh, "secrets", "get", "db_password").stdout.strip() == VALUE
    assert invoke(fresh, "audit", "verify", password=None).exit_code == 0


# -- what reaches the server -----------------------------------------------------------


def test_no_value_or_master_password_reaches_the_servers_files(
    own_cluster: pg_support.Cluster
) -> None:
    """Values are encrypted before they leave the process: after writes, a rotation, a
    migration and a checkpoint, neither a value nor the master password is in any file
    of the cluster (tables, WAL, logs)."""
    target = own_cluster.url()
    master = "master-password-never-on-the-server-51b"
    with create_test_ledger(target, master, projector=projector()) as ledger:
        ledger.set("db_password", VALUE)
        ledger.rotate()
        ledger.migrate()
        assert ledger.get("db_password").value == VALUE
    own_cluster.admin_sql("CHECKPOINT")
    found = []
    for path in own_cluster.root.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            found += [str(path) for secret in (VALUE, master) if secret.encode() in data]
    assert found == []


# -- roles -----------------------------------------------------------------------------


@pytest.fixture
def roles(pg_cluster: pg_support.Cluster, url: str) -> dict[str, str]:
    """The three group roles on the ``url`` ledger, each granted to a login role of its
    own: kind -> that login's URL (its password is ``pass-KIND``, in PGPASSWORD)."""
    created = invoke(url, "roles", "create", "--json", password=None)
    assert created.exit_code == 0, created.stderr
    logins = {}
    for kind in ("app", "operator", "auditor"):
        login = f"login_{kind}"
        pg_cluster.admin_sql(f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{login}') THEN
                CREATE ROLE {login} LOGIN PASSWORD 'pass-{kind}'; END IF; END $$""")
        pg_cluster.admin_sql(f"GRANT keyledger_{kind} TO {login}")
        logins[kind] = url.replace("keyledger_admin@", f"{login}@")
    return logins


def as_role(kind: str, target: str, *args: str, password: str | None = CLI_PASSWORD) -> Any:
    return invoke(target, *args, password=password, env={"PGPASSWORD": f"pass-{kind}"})


def refused_as(kind: str, target: str, sql: str) -> str:
    import psycopg

    conninfo, schema = split_target(target)
    with psycopg.connect(conninfo, password=f"pass-{kind}", autocommit=True) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
        try:
            conn.execute(sql)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            return str(exc)
    raise AssertionError(f"{kind} was allowed {sql!r}")


def test_roles_create_is_idempotent_and_prints_its_sql_without_a_server(
    url: str, roles: dict[str, str], tmp_path: Path
) -> None:
    again = invoke(url, "roles", "create", "--json", password=None)
    assert again.exit_code == 0
    assert document(again)["roles"] == {"app": "keyledger_app", "operator": "keyledger_operator",
                                        "auditor": "keyledger_auditor"}
    printed = invoke(f"postgresql://x@/db?host={tmp_path}&schema=prod", "roles", "create",
                     "--print", "--prefix", "kl_", password=None)
    assert printed.exit_code == 0
    assert "CREATE ROLE kl_auditor NOLOGIN" in printed.stdout and "prod.events" in printed.stdout
    grants = [line for line in printed.stdout.splitlines() if line.startswith("GRANT")]
    assert grants and not [line for line in grants if "prod.events" in line
                           and ("UPDATE" in line or "DELETE" in line)]
    not_a_server = invoke(tmp_path / "x.db", "roles", "create", password=None)
    assert not_a_server.exit_code == 2 and "PostgreSQL" in error_line(not_a_server)


def test_the_app_role_reads_and_cannot_append(roles: dict[str, str]) -> None:
    app = roles["app"]
    got = as_role("app", app, "secrets", "get", "db_password")
    assert got.exit_code == 0 and got.stdout.strip() == VALUE
    for args in (("secrets", "set", "x", "--value", "v"), ("rotate", "--yes")):
        refused = as_role("app", app, *args)
        assert refused.exit_code == 1 and "permission denied" in error_line(refused), args
    for sql in ("INSERT INTO events (seq) VALUES (99)", "UPDATE keys SET wrapped = NULL",
                "DELETE FROM proj_secrets"):
        assert "permission denied" in refused_as("app", app, sql)


def test_the_app_role_fails_closed_when_reads_are_audited(url: str, roles: dict[str, str]) -> None:
    """With read auditing on every read is an event, which the app role may not append:
    its read serves nothing, in one line."""
    assert invoke(url, "audit", "reads", "on", "--reason", "pci").exit_code == 0
    got = as_role("app", roles["app"], "secrets", "get", "db_password")
    assert got.exit_code == 1 and got.stdout == "" and "permission denied" in error_line(got)


def test_the_operator_role_runs_every_command_and_rewrites_nothing(
    roles: dict[str, str], tmp_path: Path
) -> None:
    operator = roles["operator"]
    for args in (("secrets", "set", "x", "--value", "v"), ("rotate", "--yes"),
                 ("migrate", "--yes"), ("rebuild-projections",), ("health-check",),
                 ("keys", "retire", "1"), ("audit", "verify")):
        result = as_role("operator", operator, *args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
    for table in ("events", "checkpoints"):
        for sql in (f"UPDATE {table} SET seq = seq", f"DELETE FROM {table}", f"TRUNCATE {table}"):
            assert "permission denied" in refused_as("operator", operator, sql)
    assert "must be owner" in refused_as("operator", operator, "DROP TRIGGER events_no_update ON events")
    # A restore deletes events, which no role but the tables' owner may make happen.
    out = tmp_path / "backup.db"
    assert as_role("operator", operator, "backup", "--out", str(out)).exit_code == 0
    before = plain_rows(operator.replace("login_operator@", "keyledger_admin@"),
                        "SELECT count(*) FROM events")
    restored = as_role("operator", operator, "restore", str(out), "--yes")
    assert restored.exit_code == 1 and "owns its tables" in error_line(restored)
    assert plain_rows(operator.replace("login_operator@", "keyledger_admin@"),
                      "SELECT count(*) FROM events") == before


def test_the_auditor_role_audits_without_a_password_or_the_keys(
    roles: dict[str, str], tmp_path: Path
) -> None:
    auditor = roles["auditor"]
    for args in (("audit", "verify", "--json"), ("audit", "log", "--json"), ("info", "--json"),
                 ("report", "--json"), ("audit", "replay", "--seq", "5", "--json"),
                 ("audit", "incident", "--version", "1", "--json"),
                 ("audit", "export", "--out", str(tmp_path / "r.json"), "--json")):
        result = as_role("auditor", auditor, *args, password=None)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
    assert document(as_role("auditor", auditor, "audit", "verify", "--json", password=None))["ok"]
    assert "permission denied" in refused_as("auditor", auditor, "SELECT * FROM keys")
    import psycopg

    conninfo, schema = split_target(auditor)
    with psycopg.connect(conninfo, password="pass-auditor") as conn:
        seen = {key for (key,) in conn.execute(f"SELECT key FROM {schema}.meta")}
    assert "ledger_id" in seen and not seen & {"signing_key", "kek_check"}
    denied = as_role("auditor", auditor, "secrets", "get", "db_password")
    assert denied.exit_code == 1 and VALUE not in denied.stdout + denied.stderr


# -- bulk writes ------------------------------------------------------------------------


def test_bulk_writes_equal_row_by_row_writes(url: str) -> None:
    """The adapter's one-statement form of an executemany (upsert, UPDATE with an
    expression) leaves the same rows as the statements run one by one; a batch naming a
    key twice is run row by row, so the last write wins as it would."""
    from ledger.store_postgres import _BULK_ROWS

    with PostgresRecorder(url) as recorder, recorder.write_transaction():
        conn = recorder.conn
        conn.raw.execute("CREATE TEMP TABLE t (k text PRIMARY KEY, n bigint NOT NULL, b bytea)")
        rows = [(f"k{i}", i, bytes([i % 256])) for i in range(_BULK_ROWS * 3)]
        upsert = ("INSERT INTO t (k, n, b) VALUES (?, ?, ?) "
                  "ON CONFLICT (k) DO UPDATE SET n = excluded.n, b = excluded.b")
        assert conn._bulk(upsert) is not None
        conn.executemany(upsert, rows)
        conn.executemany(upsert, [(k, n * 10, b) for k, n, b in rows[::2]])
        update = "UPDATE t SET n = n + ?, b = ? WHERE k = ?"
        assert conn._bulk(update) is not None
        conn.executemany(update, [(1, b"x", k) for k, _, _ in rows[1::2]])
        twice = [("k1", 500, b"a")] * _BULK_ROWS + [("k1", 7, b"z")]
        conn.executemany(upsert, twice)
        found = dict((k, (n, bytes(b))) for k, n, b in conn.execute("SELECT k, n, b FROM t"))
        conn.raw.execute("DROP TABLE t")
    expected = {k: (n * 10, b) if i % 2 == 0 else (n + 1, b"x") for i, (k, n, b) in enumerate(rows)}
    expected["k1"] = (7, b"z")
    assert found == expected


# -- found by the attack on this backend ---------------------------------------------------


def test_an_erasure_by_a_role_that_does_not_own_the_keys_stays_pending(
    url: str, roles: dict[str, str]
) -> None:
    """VACUUM run by another role only warns and skips the table: the destroy must not
    call the key erased. It stays pending until the owner's next command finishes it."""
    operator = roles["operator"]
    for args in (("rotate", "--yes"), ("migrate", "--yes"), ("keys", "retire", "1")):
        assert as_role("operator", operator, *args).exit_code == 0, args
    destroyed = as_role("operator", operator, "keys", "destroy", "1", "--confirm-version", "1",
                        "--yes", "--json")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert document(destroyed)["erase_pending"] is True
    assert plain_rows(url, "SELECT value FROM meta WHERE key = 'erase_pending'")
    assert invoke(url, "health-check").exit_code in (0, 1)  # the owner's command finishes it
    assert plain_rows(url, "SELECT value FROM meta WHERE key = 'erase_pending'") == []


@pytest.mark.parametrize("tamper, name", [
    ("ALTER TABLE events ENABLE REPLICA TRIGGER events_no_update", "events_no_update"),
    ("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_delete", "events_no_delete"),
    ("CREATE OR REPLACE FUNCTION keyledger_json(payload text) RETURNS jsonb LANGUAGE plpgsql "
     "IMMUTABLE STRICT AS $$ BEGIN RETURN NULL; END $$", "keyledger_json"),
])
def test_a_trigger_or_function_changed_to_fire_elsewhere_or_hide_rows_is_named(
    url: str, tamper: str, name: str
) -> None:
    plain_sql(url, tamper)
    doc = verify_json(url)
    assert doc["ok"] is False
    assert (name, "altered") in {(f["name"], f["fault"]) for f in doc["trigger_faults"]}  # type: ignore[attr-defined]


def test_a_ledger_column_under_another_collation_is_refused(url: str) -> None:
    """Paging by name relies on code-point order: under another collation a range of
    names came back empty and migrate skipped every secret, reporting success."""
    plain_sql(url, 'ALTER TABLE streams ALTER COLUMN stream TYPE text COLLATE "POSIX"')
    for args in (("migrate", "--yes"), ("audit", "verify"), ("secrets", "get", "db_password")):
        result = invoke(url, *args)
        assert result.exit_code == 1 and "collation" in error_line(result), args


def test_connection_strings_are_never_echoed_and_always_taken_for_a_server(tmp_path: Path) -> None:
    """libpq's parse errors quote the string, password and all; a keyword string that
    starts with any keyword (password=, sslmode=) names a server, not a file."""
    for target in ("postgresql://u:s3cr%ZZet@/db?schema=x", "POSTGRESQL://u:s3cr%ZZet@/db",
                   "host=/nowhere password=hun ter2secret", "postgresql://u:pw@[::1/db"):
        result = run_cli(target, "info", password=None)
        assert result.returncode != 0
        line = one_line(result)
        assert "s3cr" not in line and "ter2secret" not in line and "pw@" not in line, line
    keyword = f"password=hunter2 host={tmp_path} dbname=x user=y"
    result = run_cli(keyword, "init", cwd=tmp_path)
    assert result.returncode == 1 and "hunter2" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_audit_log_filters_on_the_server(url: str) -> None:
    assert invoke(url, "--actor", "mallory", "secrets", "set", "other", "--value", "v").exit_code == 0
    for args, expected in ((("--secret", "other"), {"SecretWritten"}),
                           (("--actor", "mallory"), {"SecretWritten"}),
                           (("--type", "KeyRotated"), {"KeyRotated"})):
        result = invoke(url, "audit", "log", *args, "--json", password=None)
        assert result.exit_code == 0, result.stderr
        assert {e["type"] for e in document(result)} == expected, args


def test_a_copy_beside_a_writer_is_the_snapshot_it_verified(url: str, tmp_path: Path) -> None:
    """Writes landing during a copy are not in it, and the copy still verifies with the
    head the source had when it was read."""
    import threading

    stop = threading.Event()

    def write() -> None:
        with Ledger.open(url, CLI_PASSWORD, seen=None) as ledger:
            k = 0
            while not stop.is_set():
                ledger.set(f"busy{k % 5}", str(k))
                k += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for i in range(3):
            copied = run_cli("", "copy", url, str(tmp_path / f"c{i}.db"), password=None)
            assert copied.returncode == 0, copied.stderr
    finally:
        stop.set()
        writer.join()


def test_destroy_and_rekey_refuse_while_a_foreign_trigger_is_on_the_keys(
    url: str, pg_cluster: pg_support.Cluster
) -> None:
    """A trigger keyledger did not make runs inside the destroy's own write and could keep
    the key being erased: the irreversible change is refused, nothing is destroyed."""
    plain_sql(url, "CREATE TABLE loot (wrapped bytea)",
              "CREATE FUNCTION spy() RETURNS trigger LANGUAGE plpgsql AS "
              "$$ BEGIN INSERT INTO loot VALUES (OLD.wrapped); RETURN NEW; END $$",
              "CREATE TRIGGER copy_keys AFTER UPDATE ON keys FOR EACH ROW EXECUTE FUNCTION spy()")
    for args in (("rotate", "--yes"), ("migrate", "--yes"), ("keys", "retire", "1")):
        assert invoke(url, *args).exit_code == 0, args
    destroyed = invoke(url, "keys", "destroy", "1", "--confirm-version", "1", "--yes")
    assert destroyed.exit_code == 1 and "copy_keys" in error_line(destroyed)
    rekey = invoke(url, "rekey-master", "--yes", env={"ENCRYPTION_NEW_MASTER_PASSWORD": "new one!"})
    assert rekey.exit_code == 1 and "copy_keys" in error_line(rekey)
    assert plain_rows(url, "SELECT count(*) FROM loot") == [(0,)]
    assert plain_rows(url, "SELECT wrapped IS NOT NULL FROM keys WHERE version = 1") == [(True,)]


def test_a_ledger_is_never_made_in_a_schema_another_role_owns(
    pg_cluster: pg_support.Cluster, tmp_path: Path
) -> None:
    """The owner of a schema can drop anything in it: init and copy refuse one prepared by
    another role, and write nothing there."""
    target = pg_cluster.url()
    schema = split_target(target)[1]
    pg_cluster.admin_sql("DROP ROLE IF EXISTS mallory")
    pg_cluster.admin_sql("CREATE ROLE mallory NOLOGIN")
    pg_cluster.admin_sql("CREATE ROLE kl_owner LOGIN PASSWORD 'owner-pass'")
    pg_cluster.admin_sql(f"GRANT CREATE ON DATABASE {pg_support.DATABASE} TO kl_owner")
    try:
        pg_cluster.admin_sql(f"CREATE SCHEMA {schema} AUTHORIZATION mallory")
        pg_cluster.admin_sql(f"GRANT ALL ON SCHEMA {schema} TO kl_owner")
        as_owner = target.replace("keyledger_admin@", "kl_owner@")
        source = tmp_path / "src.db"
        create_test_ledger(source, CLI_PASSWORD).close()
        for where, args in ((as_owner, ("init",)), (as_owner, ("copy", str(source), as_owner)),
                            (target, ("init",))):  # a superuser too
            result = run_cli(where, *args, PGPASSWORD="owner-pass")
            assert result.returncode == 1 and "belongs to the role 'mallory'" in one_line(result)
        assert pg_cluster.admin_sql(
            f"SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}'") == [(0,)]
    finally:
        pg_cluster.admin_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        pg_cluster.admin_sql(f"REVOKE CREATE ON DATABASE {pg_support.DATABASE} FROM kl_owner")
        pg_cluster.admin_sql("DROP ROLE kl_owner")
        pg_cluster.admin_sql("DROP ROLE mallory")
