"""Parquet parts of a run damaged inside, their magic bytes whole, and a part that is no
regular file: one line and exit 2 from every command, a panel in the dashboard, never a
DuckDB traceback or a hang (a fuzz of run directories found all three)."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from tests.conftest import trace_dir
from tests.integration.helpers import dsprof


def _footer(part):
    data = bytearray(part.read_bytes())
    n = int.from_bytes(data[-8:-4], "little")
    for i in range(len(data) - 8 - n, len(data) - 8, 7):
        data[i] ^= 0x5A
    part.write_bytes(bytes(data))


def _pages(part):
    data = bytearray(part.read_bytes())
    n = int.from_bytes(data[-8:-4], "little")
    rnd = random.Random(7)
    for _ in range(40):  # inside the column chunks, the footer left whole
        data[rnd.randrange(4, len(data) - 8 - n)] ^= 0xFF
    part.write_bytes(bytes(data))


def _fake(part):
    part.write_bytes(b"PAR1 hello PAR1")


def _fifo(part):
    part.unlink()
    os.mkfifo(part)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    run = tmp_path_factory.mktemp("damaged") / "run"
    res = dsprof("import", str(trace_dir("hta_inference_tiny")), "-o", str(run))
    assert res.code == 0, res.stderr
    return run


@pytest.mark.parametrize("damage", [_footer, _pages, _fake, _fifo])
@pytest.mark.parametrize("table", ["ops", "kernels"])
def test_a_damaged_part_is_one_line(tmp_path, imported, damage, table):
    # GIVEN a run whose part of one table is damaged inside (or a FIFO in its place)
    run = tmp_path / "run"
    shutil.copytree(imported, run)
    shutil.rmtree(run / "reports", ignore_errors=True)  # the text import rendered: read nothing
    (part,) = (run / "tables" / table).glob("*.parquet")
    damage(part)
    # WHEN a command reads it (a FIFO blocked every command forever)
    res = dsprof("analyze", str(run), timeout=60)
    # THEN one line says the run is damaged, exit 2; a command that never reads the damaged
    # pages may still print its report, never a traceback
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    if res.code != 0:
        assert res.code == 2, res.stderr
        (line,) = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert line.startswith("dsprof: error: ") and "damaged" in line, line
    else:
        assert damage is _pages, "a damaged footer, a fake part or a FIFO was read as whole"
