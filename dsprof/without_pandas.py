"""Keep pandas out of dsprof's own processes: pyarrow imports it when it can.

pyarrow imports pandas, when it is installed (it is wherever Dash's plotting is), at the first
``pa.array``, ``pa.table`` or ``Table.from_arrays`` of a process (its lazy shim asks "is this
a pandas object?") and at every ``to_numpy`` that copies (its C++ converter looks for
pandas' missing-value types, and retries while pandas is not found). That import cost
``dsprof import`` and a first ``dsprof summary`` 0.13-0.24 s each, about a quarter of
``import``'s CPU on a mid-size trace (docs/performance.md), for objects dsprof never hands to
pyarrow: dsprof builds its tables from lists and numpy arrays; only the dashboard uses pandas.

So a process that is dsprof's alone and gives pyarrow no pandas object puts a finder first on
``sys.meta_path`` that says pandas is not installed: pyarrow's checks find it absent and skip
what they would do for pandas objects, of which there are none. Those processes are the
commands that only read and write runs, run as the process's own command line
(``dsprof.cli.WITHOUT_PANDAS``), and the ingest's worker processes. Never a process that runs a
user's script (``dsprof run``), the dashboard, or a caller's ``main([...])`` (a test's
``CliRunner``, a notebook): there pandas is what it is.
"""

from __future__ import annotations

import sys


class NoPandas:
    """A finder that says pandas is not installed."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def keep_pandas_out() -> bool:
    """Refuse ``import pandas`` in this process from now on; True when it did so now. Not
    where pandas is loaded already (the finder could not unload it), nor twice."""
    if "pandas" in sys.modules or any(isinstance(f, NoPandas) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, NoPandas())  # type: ignore[arg-type]
    return True
