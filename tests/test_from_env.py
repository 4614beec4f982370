"""The library for applications: ``Ledger.from_env()`` and several secrets in one unlock."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import PASSWORD, VALUE, head
from conftest import Backend
from tamper_support import plain_rows

from ledger import InvalidInputError, Ledger, UnknownSecretError, WrongPasswordError
from ledger.testing import create_test_ledger


@pytest.fixture
def made(backend: Backend) -> str:
    with create_test_ledger(backend.target, PASSWORD) as ledger:
        ledger.set("web/db_password", VALUE)
        ledger.set("web/stripe_key", "sk_live")
        ledger.set("other", "x")
    return backend.target


def test_from_env_opens_what_the_cli_would(made: str, tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(PASSWORD + "\n")
    secret_file.chmod(0o600)
    for environ in ({"KEYLEDGER_DB": made, "ENCRYPTION_MASTER_PASSWORD": PASSWORD},
                    {"KEYLEDGER_DB": made, "ENCRYPTION_MASTER_PASSWORD_FILE": str(secret_file),
                     "KEYLEDGER_ACTOR": "web@host1", "KEYLEDGER_LOCK_TIMEOUT": "2"}):
        with Ledger.from_env(environ) as ledger:
            assert ledger.get("web/db_password").value == VALUE
    with Ledger.from_env({"KEYLEDGER_DB": made, "ENCRYPTION_MASTER_PASSWORD": PASSWORD,
                          "KEYLEDGER_ACTOR": "web@host1"}) as ledger:
        ledger.set("written", "by the app")
    assert plain_rows(made, "SELECT actor FROM events ORDER BY seq DESC LIMIT 1")[0][0] == "web@host1"


@pytest.mark.parametrize("environ, error", [
    ({}, WrongPasswordError),
    ({"ENCRYPTION_MASTER_PASSWORD": "x", "ENCRYPTION_MASTER_PASSWORD_FILE": "/f"}, WrongPasswordError),
    ({"ENCRYPTION_MASTER_PASSWORD": "wrong password"}, WrongPasswordError),
    ({"ENCRYPTION_MASTER_PASSWORD": PASSWORD, "KEYLEDGER_LOCK_TIMEOUT": "soon"}, InvalidInputError),
    ({"ENCRYPTION_MASTER_PASSWORD": PASSWORD, "KEYLEDGER_LOCK_TIMEOUT": "-1"}, InvalidInputError),
])
def test_from_env_refuses_what_the_cli_refuses(made: str, environ: dict[str, str],
                                               error: type[Exception]) -> None:
    before = head(made)
    with pytest.raises(error):
        Ledger.from_env({"KEYLEDGER_DB": made, **environ})
    assert head(made) == before


def test_get_many_by_name_or_prefix_in_one_unlock(made: str) -> None:
    with Ledger.open(made, PASSWORD) as ledger:
        named = ledger.get_many(["web/stripe_key", "other"])
        assert {n: s.value for n, s in named.items()} == {"web/stripe_key": "sk_live", "other": "x"}
        prefixed = ledger.get_many(prefix="web/")
        assert sorted(prefixed) == ["web/db_password", "web/stripe_key"]
        assert sorted(ledger.get_many()) == ["other", "web/db_password", "web/stripe_key"]
        with pytest.raises(UnknownSecretError):
            ledger.get_many(["other", "missing"])


def test_get_many_records_each_read_in_one_append_or_none(made: str) -> None:
    with Ledger.open(made, PASSWORD) as ledger:
        ledger.set_read_auditing(True, reason="pci")
        top = ledger.recorder.head()[0]
        with pytest.raises(UnknownSecretError):
            ledger.get_many(["other", "missing"])
        assert ledger.recorder.head()[0] == top  # a refusal records nothing
        ledger.get_many(prefix="web/")
        reads = plain_rows(made, "SELECT seq, payload FROM events WHERE type = 'SecretRead' "
                                 "ORDER BY seq")
        assert [seq for seq, _ in reads] == [top + 1, top + 2]
        assert ["web/db_password" in reads[0][1], "web/stripe_key" in reads[1][1]] == [True, True]
        checkpoints = plain_rows(made, "SELECT count(*) FROM checkpoints WHERE seq > ?", (top,))
        assert checkpoints[0][0] == 1  # one transaction, one signed checkpoint
