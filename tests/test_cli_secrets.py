"""``keyledger secrets``: set, get, list, delete, import and import-seed.

In-process through typer's CliRunner; helpers in ``cli_support``, fixtures in ``conftest``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import OTHER_VALUE, PASSWORD, VALUE, document, error_line, head, invoke, values

from ledger.testing import seed_encrypt

# -- secrets set / get / list / delete -------------------------------------------------


def test_set_with_value_then_get_json(db: Path) -> None:
    """secrets set --value stores it (the value is not echoed); get --json returns name, value, version."""
    result = invoke(db, "secrets", "set", "db_password", "--value", VALUE, "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["name"] == "db_password" and doc["version"] == 1
    assert VALUE not in result.stdout + result.stderr
    got = invoke(db, "secrets", "get", "db_password", "--json")
    assert got.exit_code == 0
    assert document(got) == {"name": "db_password", "value": VALUE, "version": 1}


@pytest.mark.parametrize(("stdin", "stored"), [
    ("plain", "plain"),
    ("with newline\n", "with newline"),
    ("two newlines\n\n", "two newlines\n"),
    ("multi\nline\n", "multi\nline"),
    ("  spaced  \n", "  spaced  "),
])
def test_set_from_stdin_strips_one_trailing_newline(db: Path, stdin: str, stored: str) -> None:
    """Without --value the value is stdin with exactly one trailing newline removed."""
    result = invoke(db, "secrets", "set", "k", stdin=stdin)
    assert result.exit_code == 0, result.stderr
    assert values(db) == {"k": stored}


def test_set_human_output_and_overwrite(db: Path) -> None:
    """set prints a success line with the key version; setting again bumps the revision."""
    first = invoke(db, "secrets", "set", "k", stdin=VALUE)
    assert first.exit_code == 0 and "✅" in first.stdout and "revision 1" in first.stdout
    second = invoke(db, "secrets", "set", "k", "--value", OTHER_VALUE, "--json")
    assert document(second)["revision"] == 2
    assert values(db) == {"k": OTHER_VALUE}
    assert VALUE not in first.stdout + first.stderr


def test_set_rejects_invalid_utf8_on_stdin(db: Path) -> None:
    """Bytes on stdin that are not UTF-8 are refused: exit 2, one line, nothing written."""
    before = head(db)
    result = invoke(db, "secrets", "set", "k", stdin=b"\xff\xfe bad")
    assert result.exit_code == 2
    assert "UTF-8" in error_line(result)
    assert head(db) == before


@pytest.mark.parametrize("name", [" padded", "tab\there", "x" * 257])
def test_set_rejects_invalid_names(db: Path, name: str) -> None:
    """An invalid secret name exits 2 with one line that never shows the value; nothing written."""
    before = head(db)
    result = invoke(db, "secrets", "set", name, "--value", VALUE)
    assert result.exit_code == 2
    assert VALUE not in error_line(result)
    assert result.stdout == ""
    assert head(db) == before


def test_set_rejects_oversized_value_without_echoing_it(db: Path) -> None:
    """A value over 64 KiB exits 2; the error line does not contain the value."""
    before = head(db)
    big = "Z" * (64 * 1024 + 1)
    result = invoke(db, "secrets", "set", "big", stdin=big)
    assert result.exit_code == 2
    line = error_line(result)
    assert "Z" * 32 not in line
    assert head(db) == before


def test_set_from_empty_stdin_is_refused(db: Path) -> None:
    """An empty stdin is a mistake, not an empty secret: exit 2 and nothing written."""
    before = head(db)
    result = invoke(db, "secrets", "set", "token", stdin="")
    assert result.exit_code == 2 and "stdin was empty" in error_line(result)
    assert head(db) == before


def test_set_strips_one_crlf_line_ending(db: Path) -> None:
    """A value piped from a Windows file loses its trailing CR LF, and only that."""
    assert invoke(db, "secrets", "set", "token", stdin="abc \r\n").exit_code == 0
    assert values(db) == {"token": "abc "}


def test_get_prints_value_and_newline(filled: Path) -> None:
    """secrets get (no --json) prints exactly the value and a newline on stdout."""
    result = invoke(filled, "secrets", "get", "api_token")
    assert result.exit_code == 0
    assert result.stdout == OTHER_VALUE + "\n"
    assert result.stderr == ""


def test_get_unknown_secret_fails(filled: Path) -> None:
    """secrets get of an unknown name exits 1 with one line and nothing on stdout."""
    result = invoke(filled, "secrets", "get", "nope")
    assert result.exit_code == 1
    assert "nope" in error_line(result)
    assert result.stdout == ""


def test_list_shows_names_and_versions_not_values(filled: Path) -> None:
    """secrets list (human and JSON) names each secret with its version and never a value."""
    result = invoke(filled, "secrets", "list", "--json", password=None)
    assert result.exit_code == 0
    rows = document(result)
    assert sorted(r["name"] for r in rows) == ["api_token", "db_password"]
    assert all(r["version"] == 1 for r in rows)
    human = invoke(filled, "secrets", "list", password=None)
    assert human.exit_code == 0
    assert "db_password" in human.stdout and "🔐" in human.stdout
    for output in (result, human):
        assert VALUE not in output.stdout + output.stderr
        assert OTHER_VALUE not in output.stdout + output.stderr


def test_list_empty_ledger(db: Path) -> None:
    """secrets list --json on an empty ledger is an empty JSON list."""
    result = invoke(db, "secrets", "list", "--json")
    assert result.exit_code == 0
    assert document(result) == []


def test_delete_removes_secret(filled: Path) -> None:
    """secrets delete hides the secret from get and list; deleting it again fails."""
    result = invoke(filled, "secrets", "delete", "api_token", "--json")
    assert result.exit_code == 0
    assert document(result) == {"name": "api_token", "deleted": True}
    assert invoke(filled, "secrets", "get", "api_token").exit_code == 1
    names = [r["name"] for r in document(invoke(filled, "secrets", "list", "--json"))]
    assert names == ["db_password"]
    before = head(filled)
    again = invoke(filled, "secrets", "delete", "api_token")
    assert again.exit_code == 1
    error_line(again)
    assert head(filled) == before
    human = invoke(filled, "secrets", "delete", "db_password")
    assert human.exit_code == 0 and "Deleted db_password" in human.stdout


# -- secrets import ---------------------------------------------------------------------


def test_import_json_object(db: Path, tmp_path: Path) -> None:
    """secrets import of a JSON object stores every name -> value; the values are not echoed."""
    source = tmp_path / "secrets.json"
    source.write_text(json.dumps({"db_password": VALUE, "api_token": OTHER_VALUE, "ünï": "ok"}))
    result = invoke(db, "secrets", "import", str(source), "--json")
    assert result.exit_code == 0, result.stderr
    doc = document(result)
    assert doc["imported"] == 3 and doc["failed"] == 0 and doc["failures"] == []
    assert values(db) == {"db_password": VALUE, "api_token": OTHER_VALUE, "ünï": "ok"}
    assert VALUE not in result.stdout + result.stderr


def test_import_dotenv_file(db: Path, tmp_path: Path) -> None:
    """A .env file is read with comments, blank lines, export, quotes and inline comments."""
    source = tmp_path / "production.env"
    source.write_text(
        "# a comment\n"
        "\n"
        "PLAIN=plain-value\n"
        "export EXPORTED=exported-value\n"
        "SINGLE='single # not a comment'\n"
        'DOUBLE="line1\\nline2 \\"quoted\\""\n'
        "INLINE=inline-value # trailing comment\n"
        "SPACED = spaced-value\n"
        "EMPTY=\n"
        "   # indented comment\n"
    )
    result = invoke(db, "secrets", "import", str(source))
    assert result.exit_code == 0, result.stderr
    assert "Imported 7" in result.stdout
    assert values(db) == {
        "PLAIN": "plain-value", "EXPORTED": "exported-value",
        "SINGLE": "single # not a comment", "DOUBLE": 'line1\nline2 "quoted"',
        "INLINE": "inline-value", "SPACED": "spaced-value", "EMPTY": "",
    }
    assert "plain-value" not in result.stdout + result.stderr


@pytest.mark.parametrize(("filename", "content"), [
    ("bad.json", '{"a": "x", '),
    ("list.json", '["a", "b"]'),
    ("number.json", '{"a": "fine", "b": 42}'),
    ("badname.json", json.dumps({"ok": "fine", " padded": VALUE})),
    ("bad.env", f"GOOD=fine\nthis line holds {VALUE} but no equals sign\n"),
    ("quote.env", f"GOOD=fine\nOPEN=\"{VALUE}\n"),
    ("after.env", f"GOOD=fine\nAFTER='x' {VALUE}\n"),
    ("binary.env", b"GOOD=\xff\xfe\n"),
])
def test_import_malformed_file_writes_nothing(
    db: Path, tmp_path: Path, filename: str, content: str | bytes
) -> None:
    """A malformed import file: exit 2, one line naming the problem (never a value), nothing written."""
    source = tmp_path / filename
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content)
    before = head(db)
    result = invoke(db, "secrets", "import", str(source))
    assert result.exit_code == 2
    line = error_line(result)
    assert VALUE not in line and VALUE not in result.stdout
    assert head(db) == before
    assert values(db) == {}


def test_import_missing_file(db: Path, tmp_path: Path) -> None:
    """Importing a file that does not exist exits 2 with one line; nothing written."""
    before = head(db)
    result = invoke(db, "secrets", "import", str(tmp_path / "absent.json"))
    assert result.exit_code == 2
    assert "absent.json" in error_line(result)
    assert head(db) == before


def test_import_skips_existing_names_unless_overwrite(db: Path, tmp_path: Path) -> None:
    """Re-importing never silently reverts a newer value; --overwrite replaces on purpose."""
    file = tmp_path / "values.json"
    file.write_text(json.dumps({"a": "from file", "b": "new"}))
    assert invoke(db, "secrets", "set", "a", stdin="newer by hand").exit_code == 0
    skipped = invoke(db, "secrets", "import", str(file), "--json")
    assert skipped.exit_code == 0
    assert (document(skipped)["imported"], document(skipped)["skipped"]) == (1, ["a"])
    assert values(db) == {"a": "newer by hand", "b": "new"}
    replaced = invoke(db, "secrets", "import", str(file), "--overwrite", "--json")
    assert document(replaced)["imported"] == 2
    assert values(db) == {"a": "from file", "b": "new"}


# -- secrets import-seed -----------------------------------------------------------------


def test_import_seed_imports_good_entries_and_names_bad_one(db: Path, tmp_path: Path) -> None:
    """import-seed keeps the readable entries, names the unreadable one, and exits 1."""
    source = tmp_path / "exported_secrets.json"
    source.write_text(json.dumps({
        "versioned": seed_encrypt(PASSWORD, 3, "seed-value-three"),
        "legacy": seed_encrypt(PASSWORD, None, "seed-legacy-value"),
        "clash": seed_encrypt(PASSWORD, 1, "seed-value-one"),
        "garbage_entry": "!!! not base64 at all !!!",
    }))
    result = invoke(db, "secrets", "import-seed", str(source), "--json")
    assert result.exit_code == 1
    doc = document(result)
    assert doc["imported"] == 3
    assert doc["failed"] == 1
    assert [f["name"] for f in doc["failures"]] == ["garbage_entry"]
    assert 3 in doc["created_versions"]
    assert values(db) == {
        "versioned": "seed-value-three", "legacy": "seed-legacy-value", "clash": "seed-value-one",
    }
    human = invoke(db, "secrets", "import-seed", str(source))
    assert human.exit_code == 1
    assert "garbage_entry" in human.stderr
    for output in (result, human):
        assert "seed-value-three" not in output.stdout + output.stderr


def test_import_seed_all_good_exits_0(db: Path, tmp_path: Path) -> None:
    """import-seed with only readable entries exits 0."""
    source = tmp_path / "seed.json"
    source.write_text(json.dumps({"a": seed_encrypt(PASSWORD, 2, "alpha")}))
    result = invoke(db, "secrets", "import-seed", str(source), "--json")
    assert result.exit_code == 0, result.stderr
    assert document(result)["failures"] == []
    assert values(db) == {"a": "alpha"}


def test_import_seed_wrong_password_entries_fail(db: Path, tmp_path: Path) -> None:
    """Ciphertexts written under another password are reported as failures, not imported."""
    source = tmp_path / "seed.json"
    source.write_text(json.dumps({"a": seed_encrypt("some other password", 2, "alpha")}))
    result = invoke(db, "secrets", "import-seed", str(source), "--json")
    assert result.exit_code == 1
    assert [f["name"] for f in document(result)["failures"]] == ["a"]
    assert values(db) == {}


@pytest.mark.parametrize("content", ["not json", "[1, 2]"])
def test_import_seed_malformed_file(db: Path, tmp_path: Path, content: str) -> None:
    """import-seed of a file that is not a JSON object exits 2 and writes nothing."""
    source = tmp_path / "seed.json"
    source.write_text(content)
    before = head(db)
    result = invoke(db, "secrets", "import-seed", str(source))
    assert result.exit_code == 2
    error_line(result)
    assert head(db) == before
