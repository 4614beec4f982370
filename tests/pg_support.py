"""A throwaway PostgreSQL cluster for the suite: ``initdb`` into a temporary folder, a
Unix socket only (no TCP port), stopped when the run ends.

The server binaries are Debian's ``postgresql`` package (``/usr/lib/postgresql/N/bin``)
or whatever ``pg_config --bindir`` names. PostgreSQL refuses to run as root: under root
the cluster belongs to the ``postgres`` system user, started through ``runuser``.

Logins: ``keyledger_admin`` (the cluster's superuser, trusted on the socket) and any
role the tests create, which must give its password (scram-sha-256), as a deployment's
application and operator roles would.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = "keyledger_admin"
DATABASE = "keyledger_test"
REQUIRE_ENV = "KEYLEDGER_REQUIRE_POSTGRES"


def server_bin() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are, or None on a machine without the server."""
    override = os.environ.get("KEYLEDGER_PG_BIN")
    candidates = [override] if override else []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True,
                                         text=True, check=True).stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                         reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def why_unavailable() -> str | None:
    """Why no cluster can start here (one line), or None when one can."""
    if server_bin() is None:
        return "no PostgreSQL server binaries (Debian's postgresql package) on this machine"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to own the cluster"
        if shutil.which("runuser") is None:
            return "running as root without runuser"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    return None


@dataclass
class Cluster:
    """A running throwaway cluster; :meth:`url` names a fresh ledger schema in it."""

    root: Path
    bin: Path
    as_owner: list[str] = field(default_factory=list)
    handed_out: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @classmethod
    def start(cls) -> Cluster:
        found = server_bin()
        assert found is not None, why_unavailable()
        root = Path(tempfile.mkdtemp(prefix="keyledger-pg-"))
        as_owner: list[str] = []
        cluster = cls(root, found, as_owner)
        (root / "socket").mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chmod(root, 0o755)
            for path in (root, root / "socket"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            as_owner += ["runuser", "-u", "postgres", "--"]
        cluster._run("initdb", "-D", str(cluster.data), "-U", ADMIN, "--auth-local=trust",
                     "--auth-host=reject", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        hba = cluster.data / "pg_hba.conf"
        cluster._write_as_owner(hba, f"local all {ADMIN} trust\nlocal all all scram-sha-256\n")
        settings = (
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{cluster.socket_dir}'\n"
            # No fsync: the machine does not crash in a test, the server may (restarts
            # with -m immediate), and what it acknowledged is in the OS's cache by then.
            "fsync = off\nfull_page_writes = off\n"
            "max_connections = 60\nshared_buffers = 64MB\n"
        )
        conf = cluster.data / "postgresql.conf"
        cluster._write_as_owner(conf, conf.read_text(encoding="utf-8") + settings)
        cluster.pg_ctl("start", "-w", "-l", str(root / "server.log"))
        cluster.admin_sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        return cluster

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_owner, str(self.bin / program), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root)

    def _write_as_owner(self, path: Path, text: str) -> None:
        stat = path.stat() if path.exists() else None
        path.write_text(text, encoding="utf-8")
        if stat is not None:
            os.chown(path, stat.st_uid, stat.st_gid)

    def pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), *args)

    def restart_immediately(self) -> None:
        """``pg_ctl restart -m immediate``: every connection dropped, no clean shutdown."""
        self.pg_ctl("restart", "-m", "immediate", "-w", "-l", str(self.root / "server.log"))

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)

    def conninfo(self, *, user: str = ADMIN, database: str = DATABASE) -> str:
        return f"host={self.socket_dir} dbname={database} user={user}"

    def url(self, schema: str | None = None, *, user: str = ADMIN) -> str:
        """A ``postgresql://`` URL of a ledger in a fresh (or the given) schema."""
        schema = schema or f"t_{uuid.uuid4().hex[:12]}"
        self.handed_out.append(schema)
        return (f"postgresql://{user}@/{DATABASE}?host={self.socket_dir}&schema={schema}")

    def drop_handed_out(self) -> None:
        """Drop every schema :meth:`url` named since the last call: a test's ledgers go
        with it, so the catalog (which keyledger's checks read) stays small all run long."""
        import psycopg

        schemas, self.handed_out = self.handed_out, []
        if not schemas:
            return
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")
            for schema in schemas:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]

    def admin_sql(self, statement: str, *, database: str = DATABASE) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.conninfo(database=database), autocommit=True) as conn:
            cursor = conn.execute(statement)  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    cluster = Cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
