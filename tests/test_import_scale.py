"""``secrets import`` at scale: files checked whole, then recorded chunk by chunk in one
transaction with one signed checkpoint (small chunks here, so a few hundred entries span
many of them)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from cli_support import error_line, head, invoke, values
from conftest import Backend
from hypothesis import given
from hypothesis import strategies as st
from tamper_support import plain_rows

from ledger import IntegrityError, InvalidInputError, Ledger, import_formats, importing
from ledger import events as ev
from ledger.events import NewEvent
from ledger.import_formats import (
    check_import_file_untrusted,
    checked_entry,
    detect_format,
    parse_dotenv_untrusted,
    parse_json_object_untrusted,
    read_text_untrusted,
)
from ledger.integrity import verify_ledger
from ledger.testing import read_all
from projections import ReadModels

ENTRIES = 300
CHUNK = 40


@pytest.fixture(params=["in-process", "worker"])
def import_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A test using it runs twice: entries encrypted in process, and by a forked worker that
    reads the file itself (the path files of 5,000 entries and more take)."""
    monkeypatch.setattr(importing, "PIPELINE_MIN_ENTRIES", 0 if request.param == "worker" else 10**9)
    return str(request.param)


def numbered(count: int = ENTRIES) -> dict[str, str]:
    return {f"app/s-{i:04d}": f"value-{i}" for i in range(count)}


def write(path: Path, entries: dict[str, str] | str) -> Path:
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries, indent=1))
    return path


def import_file(ledger: Ledger, path: Path, *, overwrite: bool = False) -> importing.ImportResult:
    return ledger.import_file(check_import_file_untrusted(path), overwrite=overwrite,
                              chunk_size=CHUNK)


def state(ledger: Ledger) -> tuple[Any, ...]:
    """Everything an import could change: the events' head, the checkpoints, the read models."""
    conn = ledger.recorder.conn
    return (
        ledger.recorder.head(),
        conn.execute("SELECT count(*) FROM checkpoints").fetchone(),
        conn.execute("SELECT * FROM proj_secrets ORDER BY name").fetchall(),
        conn.execute("SELECT * FROM proj_secret_counts ORDER BY 1, 2").fetchall(),
        conn.execute("SELECT * FROM proj_checkpoint").fetchall(),
    )


def read_models(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    runner = ledger.recorder.projector
    assert runner is not None
    tables = [t for p in runner.projections for t in p.tables]  # type: ignore[attr-defined]
    conn = ledger.recorder.conn
    # The checkpoint's position only: its schema cookie moves with every rebuild's DDL.
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables} | {
        "proj_checkpoint": conn.execute("SELECT last_seq, last_hash FROM proj_checkpoint").fetchall()}


# -- recording ---------------------------------------------------------------------------


@pytest.mark.usefixtures("import_mode")
def test_chunked_import_records_every_entry_in_file_order(ledger: Ledger, tmp_path: Path) -> None:
    """An import spanning many chunks records every entry, in file order, under the current key."""
    entries = numbered()
    result = import_file(ledger, write(tmp_path / "v.json", entries))
    assert (result.imported, result.skipped) == (ENTRIES, [])
    assert read_all(ledger) == entries
    streams = [e.stream for e in ledger.recorder.read_events() if e.type == "SecretImported"]
    assert streams == [ev.secret_stream(name) for name in entries]


@pytest.mark.usefixtures("import_mode")
def test_import_values_uses_the_same_chunked_path(ledger: Ledger) -> None:
    """import_values of a mapping appends in chunks too, with one checkpoint for them all."""
    before = ledger.recorder.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    result = importing.import_values(ledger.session, numbered(), source="json", chunk_size=CHUNK)
    assert result.imported == ENTRIES and read_all(ledger) == numbered()
    after = ledger.recorder.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    assert after == before + 1


@pytest.mark.usefixtures("import_mode")
def test_existing_names_are_skipped_across_chunks(ledger: Ledger, tmp_path: Path) -> None:
    """Live names in any chunk are skipped and listed in file order; a deleted one is imported again."""
    entries = numbered()
    live = ["app/s-0007", "app/s-0150", "app/s-0299"]
    for name in [*live, "app/s-0100"]:
        ledger.set(name, "newer by hand")
    ledger.delete("app/s-0100")
    result = import_file(ledger, write(tmp_path / "v.json", entries))
    assert result.skipped == live and result.imported == ENTRIES - len(live)
    assert read_all(ledger) == {**entries, **{name: "newer by hand" for name in live}}
    assert ledger.secret("app/s-0100").revision == 3  # written, deleted, imported


@pytest.mark.usefixtures("import_mode")
def test_overwrite_replaces_existing_names_across_chunks(ledger: Ledger, tmp_path: Path) -> None:
    """With overwrite, live names in any chunk get a new revision holding the file's value."""
    entries = numbered()
    ledger.set("app/s-0150", "newer by hand")
    result = import_file(ledger, write(tmp_path / "v.json", entries), overwrite=True)
    assert (result.imported, result.skipped) == (ENTRIES, [])
    assert read_all(ledger) == entries
    assert ledger.secret("app/s-0150").revision == 2


# -- all or nothing ----------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "last", "named"), [
    ("v.json", '"app/s-9999": 42', "app/s-9999"),
    ("v.json", '"bad\\u0007name": "v"', "bad"),
    ("v.json", f'"too_big": "{"Q" * (64 * 1024 + 1)}"', "too_big"),
    ("v.json", '"app/s-9999": "v",', "line"),
    ("v.env", "this is not a KEY=value line", "line"),
    ("v.env", f"TOO_BIG={'Q' * (64 * 1024 + 1)}", "TOO_BIG"),
])
@pytest.mark.usefixtures("import_mode")
def test_bad_entry_after_hundreds_of_good_ones_writes_nothing(
    db: Path, tmp_path: Path, filename: str, last: str, named: str
) -> None:
    """A bad entry at the very end of a large file: exit 2 with one line naming it, nothing written."""
    good = numbered()
    if filename.endswith(".json"):
        text = "{" + ", ".join(f'"{k}": "{v}"' for k, v in good.items()) + ", " + last + "}"
    else:
        text = "".join(f"S{k[6:]}={v}\n" for k, v in good.items()) + last + "\n"
    before = head(db)
    result = invoke(db, "secrets", "import", write(tmp_path / filename, text).as_posix())
    assert result.exit_code == 2
    line = error_line(result)
    assert named in line and "QQQQ" not in line and "value-1" not in line
    assert head(db) == before and values(db) == {}


@pytest.mark.parametrize(("filename", "text", "message"), [
    ("v.json", '{"app/s-0003": "x", ' + ", ".join(f'"n{i}": "v"' for i in range(ENTRIES))
     + ', "app/s-0003": "y"}', "the name 'app/s-0003' appears more than once"),
    ("v.env", "DUP=x\n" + "".join(f"N{i}=v\n" for i in range(ENTRIES)) + "DUP=y\n",
     f"line {ENTRIES + 2} sets DUP a second time"),
])
@pytest.mark.usefixtures("import_mode")
def test_duplicate_names_far_apart_are_refused(
    db: Path, tmp_path: Path, filename: str, text: str, message: str
) -> None:
    """A name given twice hundreds of entries apart is refused (exit 2) and nothing is written."""
    before = head(db)
    result = invoke(db, "secrets", "import", write(tmp_path / filename, text).as_posix())
    assert result.exit_code == 2 and message in error_line(result)
    assert head(db) == before


def test_fault_in_the_last_chunk_undoes_the_chunks_before_it(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, import_mode: str
) -> None:
    """A fault while preparing the last chunk rolls back every chunk already appended (in
    a worker, only the fault's type reaches the writer: its message might quote data)."""
    path = write(tmp_path / "v.json", numbered())
    ledger.set("kept", "as it was")
    before = state(ledger)
    original = importing._encrypted

    def failing(key: bytes, version: int, source: Any, name: str, plaintext: bytes) -> Any:
        if name == "app/s-0299":
            raise OSError("disk I/O error")
        return original(key, version, source, name, plaintext)

    def failing_worker(entries: Any, *args: Any) -> Any:
        def fail_last() -> Any:
            for name, plaintext in entries():
                if name == "app/s-0299":
                    raise OSError("disk I/O error at app/s-0299")
                yield name, plaintext
        return real_prepare(fail_last, *args)

    real_prepare = importing.prepare_import
    monkeypatch.setattr(importing, "_encrypted", failing)
    monkeypatch.setattr(importing, "prepare_import", failing_worker)
    expected = (OSError, "disk I/O error") if import_mode == "in-process" else (
        IntegrityError, r"worker process failed \(OSError\)")
    with pytest.raises(expected[0], match=expected[1]) as caught:
        import_file(ledger, path)
    assert import_mode == "in-process" or "s-0299" not in str(caught.value)
    assert state(ledger) == before
    assert read_all(ledger) == {"kept": "as it was"}
    assert ReadModels(ledger.recorder).problems(deep=True) == []


@pytest.mark.usefixtures("import_mode")
def test_chunks_are_invisible_to_other_readers_until_the_end(
    ledger: Ledger, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While an import is between chunks, another connection sees none of its events or rows."""
    path = write(tmp_path / "v.json", numbered())
    seen: list[tuple[int, int]] = []
    kind = type(ledger.recorder)
    original = kind.stream_heads_of

    def peeking(self: Any, streams: Any) -> Any:
        seen.append((plain_rows(backend.target, "SELECT count(*) FROM events")[0][0],
                     plain_rows(backend.target, "SELECT count(*) FROM proj_secrets")[0][0]))
        return original(self, streams)

    before = ledger.recorder.head()[0]
    monkeypatch.setattr(kind, "stream_heads_of", peeking)
    import_file(ledger, path)
    assert len(seen) == -(-ENTRIES // CHUNK)
    assert set(seen) == {(before, 0)}


@pytest.mark.parametrize("how", ["in place, same size and time", "appended to"])
@pytest.mark.usefixtures("import_mode")
def test_file_changed_after_its_check_writes_nothing(
    ledger: Ledger, tmp_path: Path, how: str
) -> None:
    """A file changed between its check and its import is refused, and nothing is written."""
    path = write(tmp_path / "v.json", numbered())
    checked = check_import_file_untrusted(path)
    before = state(ledger)
    stat = path.stat()
    text = path.read_text()
    if how == "appended to":
        path.write_text(text[:-1] + ', "late": 42}')
    else:  # the last value changed: only the digest, at the end of the file, can tell
        path.write_text(text.replace('"value-299"', '"VALUE-299"'))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(InvalidInputError, match="changed while it was being imported"):
        ledger.import_file(checked, chunk_size=CHUNK)
    assert state(ledger) == before


@pytest.mark.usefixtures("import_mode")
def test_unsigned_tail_is_refused_before_any_chunk(ledger: Ledger, tmp_path: Path) -> None:
    """A ledger ending in events that no checkpoint covers is refused, and nothing is appended."""
    ledger.recorder.append(  # as a writer bypassing keyledger's signing would
        [NewEvent(ev.secret_stream("sneaked"), 1, ev.SecretDeleted(name="sneaked"))],
        actor="intruder", occurred_at="2026-01-01T00:00:00Z",
    )
    before = state(ledger)
    with pytest.raises(IntegrityError, match="not covered by a valid signed checkpoint"):
        import_file(ledger, write(tmp_path / "v.json", numbered()))
    assert state(ledger) == before


# -- what the ledger looks like afterwards -----------------------------------------------


@pytest.mark.usefixtures("import_mode")
def test_read_models_equal_a_rebuild_after_a_chunked_import(ledger: Ledger, tmp_path: Path) -> None:
    """Read models kept up to date chunk by chunk equal the ones rebuilt from the events alone."""
    ledger.set("app/s-0100", "newer by hand")
    ledger.set("gone", "x")
    ledger.delete("gone")
    import_file(ledger, write(tmp_path / "v.json", {**numbered(), "gone": "back"}))
    kept = read_models(ledger)
    views = ReadModels(ledger.recorder)
    assert views.problems(deep=True) == []
    views.rebuild()
    assert read_models(ledger) == kept


@pytest.mark.usefixtures("import_mode")
def test_one_signed_checkpoint_covers_the_head_and_audit_verify_passes(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A chunked import adds exactly one checkpoint, on its last event, and audit verify passes."""
    recorder = ledger.recorder
    before = list(recorder.checkpoints())
    import_file(ledger, write(tmp_path / "v.json", numbered()))
    after = list(recorder.checkpoints())
    assert after[:-1] == before
    seq, head_hash = recorder.head()
    assert (after[-1].seq, after[-1].head_hash, after[-1].event_hash) == (seq, head_hash, head_hash)
    report = verify_ledger(recorder, all_signatures=True)
    assert report.ok, report.problems


# -- reading files -----------------------------------------------------------------------


@pytest.mark.usefixtures("import_mode")
def test_a_pipe_is_checked_then_imported(db: Path, tmp_path: Path) -> None:
    """A file that can be read only once (a named pipe) is still checked whole, then imported."""
    fifo = tmp_path / "values.pipe"
    os.mkfifo(fifo)
    entries = numbered(50)
    writer = threading.Thread(target=lambda: fifo.write_text(json.dumps(entries)))
    writer.start()
    result = invoke(db, "secrets", "import", str(fifo), "--json")
    writer.join(timeout=10)
    assert result.exit_code == 0, result.stderr
    assert values(db) == entries


def whole_file(path: Path) -> tuple[str, object]:
    """What reading the whole file at once finds: its entries, or the first fault."""
    try:
        text = read_text_untrusted(path)
        if detect_format(path, text) == "dotenv":
            entries: dict[str, Any] = parse_dotenv_untrusted(path, text)
        else:
            entries = parse_json_object_untrusted(path, text)
            bad = [name for name, value in entries.items() if not isinstance(value, str)]
            if bad:
                raise InvalidInputError(f"{path}: the value of {bad[0]!r} is not a string")
        return "ok", [(name, checked_entry(name, value)) for name, value in entries.items()]
    except InvalidInputError as exc:
        return "refused", str(exc)


def streamed(path: Path) -> tuple[str, object]:
    try:
        return "ok", list(check_import_file_untrusted(path).entries())
    except InvalidInputError as exc:
        return "refused", str(exc)


JSON_PIECES = [
    "{", "}", "[", "]", ":", ",", " ", "\n", "\r\n", "\t", '"a"', '"b"', '"é"', '"\\u00e9"',
    '"\\ud83d\\ude00"', '"\\ud800"', '"x\\n"', '"\\q"', '"\\u12"', '"open', "1", "-1.5e3", "true",
    "null", "-Infinity", '{"x": 1, "x": 2}', "\u00a0", "\ufeff", '"' + "y" * 40 + '"', '"\x01"',
]
DOTENV_PIECES = [
    "A=1", "B = 2", "export C=3", "# note", "", "A=again", "S='x # y'", 'D="a\\nb"', 'E="open',
    "F='x' y", "no equals", "G=é", "I=v # c", "\r", "\n", "\r\n", "\x0b", "\x85", "\u2028",
]


WHITE = st.sampled_from(["", " ", "\n", "\r\n\t"])


@st.composite
def import_texts(draw: st.DrawFn) -> tuple[str, str]:
    if draw(st.booleans()):
        members = draw(st.lists(st.tuples(
            st.sampled_from(["a", "b", "é", " lead", "k\x07", "x" * 257]),
            st.one_of(st.sampled_from(["v", "é", "\ud800", "y" * 300, "-1.5e3"]), st.integers(),
                      st.floats(allow_nan=False), st.none(), st.just({"n": [1, 2]})),
        ), max_size=6))
        ascii_only = draw(st.booleans())
        body = ",".join(
            draw(WHITE) + json.dumps(name, ensure_ascii=ascii_only) + draw(WHITE) + ":"
            + draw(WHITE) + json.dumps(value, ensure_ascii=ascii_only) + draw(WHITE)
            for name, value in members
        )
        opener = draw(st.sampled_from(["{", "{", "{", "[", ""]))
        text = draw(WHITE) + opener + body + "}" + draw(WHITE) + draw(st.sampled_from(["", "x", ","]))
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", *JSON_PIECES])) + text[at:]
        return draw(st.sampled_from(["v.json", "v.txt"])), text
    pieces = draw(st.lists(st.sampled_from(DOTENV_PIECES + JSON_PIECES[:3]), max_size=10))
    separator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return draw(st.sampled_from(["v.env", "v.json"])), separator.join(pieces)


TRICKY = {  # each once read wrongly in pieces, before the reader was fixed
    "white space before a non-object": ("v.json", ' \r\n\u00a0"a": "b"'),
    "a duplicate, then text after the object": ("v.txt", '{"x": "1", "x": "2"}null'),
    "a number cut by a piece's end": ("v.json", '{"c": -1.5e3 "v"}'),
    "a BOM split across pieces": ("v.json", '\ufeff {"a": "b"} ,'),
    "a CRLF split across pieces": ("v.env", "A=1\r\nB\r\nC=3"),
    "a long value": ("v.json", '{"a": "' + "v" * 5000 + '", "b": 1}'),
}


@pytest.mark.parametrize("read_bytes", [1, 2, 3, 7])
@pytest.mark.parametrize("case", sorted(TRICKY))
def test_tricky_files_read_in_pieces_as_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, read_bytes: int
) -> None:
    """Faults found only by reading in small pieces are reported as reading the whole file would."""
    filename, text = TRICKY[case]
    path = write(tmp_path / filename, text)
    monkeypatch.setattr(import_formats, "READ_BYTES", read_bytes)
    assert streamed(path) == whole_file(path)


@given(import_texts(), st.sampled_from([1, 2, 3, 5, 16, 1 << 20]), st.binary(max_size=2))
def test_streamed_check_agrees_with_reading_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: tuple[str, str], read_bytes: int,
    junk: bytes,
) -> None:
    """Read in pieces of any size, a file is accepted or refused exactly as reading it whole would."""
    filename, text = case
    path = tmp_path / filename
    data = text.encode("utf-8", "surrogatepass")
    path.write_bytes(data[: len(data) // 2] + junk + data[len(data) // 2 :])
    monkeypatch.setattr(import_formats, "READ_BYTES", read_bytes)
    assert streamed(path) == whole_file(path)


def test_a_large_file_is_read_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking a file never reads it whole: the reader asks for one piece at a time."""
    path = write(tmp_path / "v.json", numbered())
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        file = real_open(self, *args, **kwargs)
        read = file.read
        file.read = lambda size=-1: reads.append(size) or read(size)  # type: ignore[method-assign]
        return file

    monkeypatch.setattr(import_formats, "READ_BYTES", 256)
    monkeypatch.setattr(Path, "open", counting_open)
    checked = check_import_file_untrusted(path)
    assert list(checked.entries()) == [(k, v.encode()) for k, v in numbered().items()]
    assert reads and set(reads) == {256}


@pytest.mark.usefixtures("import_mode")
def test_cli_import_of_many_chunks_reports_counts(db: Path, tmp_path: Path) -> None:
    """Through the CLI, a file larger than one chunk is imported whole and counted once."""
    entries = numbered(importing.IMPORT_CHUNK + 7)
    result = invoke(db, "secrets", "import", write(tmp_path / "v.json", entries).as_posix(), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["imported"], doc["skipped"]) == (len(entries), [])
    assert plain_rows(db, "SELECT count(*) FROM proj_secrets")[0][0] == len(entries)



def test_an_unknown_import_source_is_refused_at_the_call(ledger: Ledger) -> None:
    """A ``source`` that is no import format is a ValueError before anything runs, not a
    validation error from inside the import worker."""
    head = ledger.recorder.head()
    with pytest.raises(ValueError, match="source must be one of json, dotenv"):
        ledger.import_values({"a": "1"}, source="bench.json")  # type: ignore[arg-type]
    assert ledger.recorder.head() == head
