"""The script a user would write instead of keyledger: `make bench` times it beside keyledger.

One table of name, version and ciphertext; values sealed with AES-256-GCM (the name as
associated data) under a key per version derived once from the password; re-encrypted in
batches of 10,000 with ``executemany``, each batch one transaction; and, unless
``--plain``, one audit row per secret written in the same transaction (time, actor,
action, name, version). SQLite runs WAL with ``synchronous=FULL``; PostgreSQL commits
durably (the benchmark's cluster has ``fsync`` and ``synchronous_commit`` on).

    script.py TARGET import FILE [--plain]     FILE: a JSON object of name -> value
    script.py TARGET migrate [--plain]         every secret onto the next version

TARGET is a SQLite file or a ``postgresql://`` URL. It prints one JSON line: the secrets
handled and the seconds from opening the store to the last commit.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import sqlite3
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

BATCH = 10_000
PASSWORD = "benchmark master password, not secret"
ACTOR = getpass.getuser()


def key(version: int) -> AESGCM:
    return AESGCM(hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), b"script-salt-%d" % version,
                                      600_000))


def seal(cipher: AESGCM, name: str, value: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + cipher.encrypt(nonce, value, name.encode())


def connect(target: str) -> tuple[Any, str]:
    """The connection and its placeholder."""
    if target.startswith("postgresql://"):
        import psycopg

        url, _, schema = target.partition("&schema=")  # the benchmark's: one schema each
        conn = psycopg.connect(url)
        if schema:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(f"SET search_path TO {schema}")
            conn.commit()
        return conn, "%s"
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn, "?"


def create(conn: Any, postgres: bool) -> None:
    blob = "bytea" if postgres else "BLOB"
    key_column = "id bigserial PRIMARY KEY" if postgres else "id INTEGER PRIMARY KEY"
    with transaction(conn, postgres):
        conn.execute(f"CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, "
                     f"version INTEGER NOT NULL, ciphertext {blob} NOT NULL)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS audit ({key_column}, at TEXT NOT NULL, "
                     "actor TEXT NOT NULL, action TEXT NOT NULL, name TEXT NOT NULL, "
                     "version INTEGER NOT NULL)")


class transaction:
    def __init__(self, conn: Any, postgres: bool) -> None:
        self.conn, self.postgres = conn, postgres

    def __enter__(self) -> None:
        if not self.postgres:
            self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.conn.commit() if self.postgres else self.conn.execute("COMMIT")
        else:
            self.conn.rollback() if self.postgres else self.conn.execute("ROLLBACK")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def bulk_import(conn: Any, p: str, postgres: bool, values: dict[str, str], audited: bool) -> int:
    create(conn, postgres)
    cipher = key(1)
    items = list(values.items())
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        with transaction(conn, postgres):
            cur = conn.cursor()
            cur.executemany(f"INSERT INTO secrets VALUES ({p}, {p}, {p})",
                            [(n, 1, seal(cipher, n, v.encode())) for n, v in batch])
            if audited:
                at = now()
                cur.executemany(f"INSERT INTO audit (at, actor, action, name, version) "
                                f"VALUES ({p}, {p}, 'import', {p}, 1)",
                                [(at, ACTOR, n) for n, _ in batch])
    return len(items)


def migrate(conn: Any, p: str, postgres: bool, audited: bool) -> int:
    (old,) = conn.execute("SELECT max(version) FROM secrets").fetchone()
    new = old + 1
    ciphers = {v: key(v) for v in range(1, new + 1)}
    done, after = 0, ""
    while True:
        rows = conn.execute(f"SELECT name, version, ciphertext FROM secrets WHERE name > {p} "
                            f"AND version <> {p} ORDER BY name LIMIT {BATCH}", (after, new)).fetchall()
        if not rows:
            return done
        updates = []
        for name, version, sealed in rows:
            sealed = bytes(sealed)
            value = ciphers[version].decrypt(sealed[:12], sealed[12:], name.encode())
            updates.append((new, seal(ciphers[new], name, value), name))
        with transaction(conn, postgres):
            cur = conn.cursor()
            cur.executemany(f"UPDATE secrets SET version = {p}, ciphertext = {p} WHERE name = {p}",
                            updates)
            if audited:
                at = now()
                cur.executemany(f"INSERT INTO audit (at, actor, action, name, version) "
                                f"VALUES ({p}, {p}, 'migrate', {p}, {p})",
                                [(at, ACTOR, name, new) for _, _, name in updates])
        done += len(rows)
        after = rows[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("action", choices=("import", "migrate"))
    parser.add_argument("file", nargs="?")
    parser.add_argument("--plain", action="store_true", help="no audit rows")
    args = parser.parse_args()
    started = time.perf_counter()
    conn, p = connect(args.target)
    postgres = p == "%s"
    if args.action == "import":
        with open(args.file, encoding="utf-8") as source:
            values = json.load(source)
        count = bulk_import(conn, p, postgres, values, not args.plain)
    else:
        count = migrate(conn, p, postgres, not args.plain)
    conn.close()
    print(json.dumps({"secrets": count, "seconds": round(time.perf_counter() - started, 6)}))


if __name__ == "__main__":
    main()
