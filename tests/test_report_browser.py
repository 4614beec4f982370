"""The HTML compliance report in a real headless Chromium: it renders, charts and all.

Skipped when Debian's ``chromium`` is not installed, unless ``KEYLEDGER_REQUIRE_CHROMIUM=1``
(CI sets it once it has installed chromium), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_compliance import build_scenario

from ledger.store_sqlite import SQLiteRecorder
from projections.renderers.compliance import render
from projections.reports.compliance import build_compliance_report

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WINDOW = (1280, 2000)


def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        if os.environ.get("KEYLEDGER_REQUIRE_CHROMIUM") == "1":
            pytest.fail("KEYLEDGER_REQUIRE_CHROMIUM=1 but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def png_pixels(data: bytes, rows: int) -> tuple[int, int, list[bytes]]:
    """Width, height and the first ``rows`` rows of an 8-bit RGB(A) PNG, unfiltered
    (the stdlib alone: zlib and struct)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 4 if colour == 6 else 3
    stride = width * bpp
    raw = zlib.decompress(idat)
    out: list[bytes] = []
    prev = bytearray(stride)
    for y in range(min(rows, height)):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        out.append(bytes(line))
        prev = line
    return width, height, [bytes(r[x:x + 3]) for r in out for x in range(0, stride, bpp)]


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    db = folder / "keyledger.db"
    build_scenario(db)
    with SQLiteRecorder(db) as recorder:
        built = build_compliance_report(recorder, now=datetime(2026, 7, 1, tzinfo=UTC))
    page = folder / "report.html"
    page.write_text(render(built, "html"), encoding="utf-8")
    return page


def test_chromium_renders_both_charts_with_a_bar_per_version(report_html: Path, tmp_path: Path) -> None:
    """Chromium's rendered DOM holds the two SVG charts, one bar per key version and the
    timeline's markers."""
    result = run_chromium(chromium(), tmp_path / "profile", "--dump-dom", report_html.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert dom.count("<svg") == 2
    bars = re.findall(r'<rect class="bar" data-version="(\d+)"', dom)
    assert bars == ["1", "2", "3", "4", "5"]
    assert len(re.findall(r'data-marker="destroyed"', dom)) == 1
    assert "ledger verified" in dom


def test_chromium_screenshot_is_not_blank(report_html: Path, tmp_path: Path) -> None:
    """The screenshot of the page is a real picture: a sizeable PNG with many colours."""
    shot = tmp_path / "report.png"
    result = run_chromium(chromium(), tmp_path / "profile", f"--screenshot={shot}",
                          f"--window-size={WINDOW[0]},{WINDOW[1]}", report_html.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert len(data) > 20_000
    width, height, pixels = png_pixels(data, rows=160)  # the title, the badge, the cards
    assert (width, height) == WINDOW
    colours = set(pixels)
    assert len(colours) >= 8, colours
    white = pixels.count(b"\xff\xff\xff")
    assert 0.3 < white / len(pixels) < 0.999
