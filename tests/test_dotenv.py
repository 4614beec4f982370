"""``secrets import`` reads ``.env`` files as python-dotenv does, held to it over a table
of cases (python-dotenv's ``${VAR}`` expansion aside: keyledger never expands)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dotenv import dotenv_values

from ledger.errors import InvalidInputError
from ledger.import_formats import check_import_file_untrusted, parse_dotenv_untrusted

PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7\n"
       "-----END RSA PRIVATE KEY-----")

CASES = {
    "plain": "A=b\n",
    "export": "export A=b\n",
    "spaces around =": "A = b  \n",
    "indented": "   A=b\n\tB=c\n",
    "inline comment": "A=b # a comment\n",
    "hash without space": "A=b#not-a-comment\n",
    "single quotes": "A='single # not a comment'\n",
    "double quotes and escapes": 'A="tab\\there \\"q\\" \\\\ \\n end"\n',
    "bell, backspace, form feed, vertical tab": 'A="\\a\\b\\f\\v"\n',
    "unknown escape kept": 'A="\\x41 \\d \\$"\n',
    "escaped quote in single quotes": "A='it\\'s'\n",
    "backslashes in single quotes": "A='C:\\path \\\\share'\n",
    "empty": "A=\nB=''\nC=\"\"\n",
    "comment after quotes": "A=\"value\" # trailing\nB='v'#c\n",
    "equals in value": "A=b=c==d\n",
    "unicode": "A=clé 🔑\nB=\"日本\"\n",
    "blank lines and comments": "\n# a comment\n   # indented comment\nA=b\n\n",
    "no final newline": "A=b",
    "crlf": "A=b\r\nB='c'\r\n",
    "pem in double quotes over lines": f'KEY="{PEM}"\nAFTER=x\n',
    "pem in single quotes over lines": f"KEY='{PEM}'\n",
    "pem with crlf": f'KEY="{PEM}"\r\nAFTER=x\r\n'.replace("\n", "\r\n").replace("\r\r", "\r"),
    "a hash line inside a quoted value": 'A="first\n# not a comment\nlast"\nB=2\n',
    "indented continuation kept": "A='one\n    two\n'\n",
    "quote closing on its own line": 'A="x\n"\n',
    "escaped quote at a line end": 'A="a\\"\nb"\n',
    "dollar not expanded": "A=$HOME\nB='${HOME}'\n",
    "a comment where the value would be": "A= # note\nB=#not-a-comment\nC=  #x y\n",
    "form feed and unicode separators inside a line": "B=\x1ca=xyz\nC=x\x0cy\u2028z\x85w\n",
    "cr only line breaks": "A=1\rB='two\rlines'\rC=3",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_entries_read_as_python_dotenv_reads_them(name: str, tmp_path: Path) -> None:
    path = tmp_path / "case.env"
    path.write_bytes(CASES[name].encode("utf-8"))
    theirs = dict(dotenv_values(path, interpolate=False))
    assert parse_dotenv_untrusted(path, path.read_bytes().decode("utf-8")) == theirs
    # ... and the two passes of `secrets import`, which never hold the whole file.
    checked = check_import_file_untrusted(path)
    assert dict(checked.values()) == theirs


@pytest.mark.parametrize("content", [
    'A="never closed\nB=2\n',
    "A='never closed",
    "A='x' trailing text\n",
    "not a key value line\n",
])
def test_what_python_dotenv_skips_keyledger_refuses(content: str, tmp_path: Path) -> None:
    """python-dotenv warns and leaves such a line out; an import refuses the file, naming
    the line, rather than import part of what was meant."""
    path = tmp_path / "bad.env"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError, match="line 1"):
        check_import_file_untrusted(path)


def test_a_long_multi_line_value_costs_time_in_proportion_to_its_length(tmp_path: Path) -> None:
    """Every line of a quoted value is scanned once. It was rescanned from the quote at
    each line, so a file of 20,000 line breaks took 22 s; these 160,000 would have taken
    hours (the suite's time limit is the failure), and now take a fraction of a second."""
    long = tmp_path / "long.env"
    long.write_text('A="' + "x\n" * 160_000 + '"\nB=1\n', encoding="utf-8")
    assert parse_dotenv_untrusted(long, long.read_text(encoding="utf-8"))["B"] == "1"
    unclosed = tmp_path / "unclosed.env"
    unclosed.write_text('A="' + "\n" * 160_000, encoding="utf-8")
    with pytest.raises(InvalidInputError, match="unclosed quote"):
        check_import_file_untrusted(unclosed)
