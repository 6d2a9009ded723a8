"""Which DuckDB errors are a run's damage (dsprof.sqlsafe.damaged_run): real DuckDB reading a
real Parquet part damaged inside, against an error in a query."""

from __future__ import annotations

import pytest


def test_a_damaged_part_is_the_runs_damage_and_a_bad_query_is_not(tmp_path):
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsprof.sqlsafe import damaged_run

    part = tmp_path / "part.parquet"
    pq.write_table(pa.table({"x": list(range(10_000))}), part, compression="lz4")
    data = bytearray(part.read_bytes())
    n = int.from_bytes(data[-8:-4], "little")
    for i in range(8, len(data) - 8 - n, 3):  # the column chunk, the footer whole
        data[i] ^= 0xFF
    part.write_bytes(bytes(data))
    con = duckdb.connect()
    # GIVEN DuckDB's error for a page it cannot decode: the run's damage, one line
    with pytest.raises(duckdb.Error) as caught:
        con.execute(f"SELECT sum(x) FROM read_parquet('{part}')").fetchall()
    said = damaged_run(caught.value)
    assert said is not None and "the run directory is damaged" in str(said)
    # GIVEN an error in dsprof's own SQL: it stays the bug it is
    with pytest.raises(duckdb.Error) as bad:
        con.execute("SELECT no_such_column FROM range(3)").fetchall()
    assert damaged_run(bad.value) is None
    assert damaged_run(ValueError("parquet")) is None
