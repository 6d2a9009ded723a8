"""The vocabulary of the schema: a :class:`Column` (name, Arrow type, meaning) and a :class:`Table`
(its columns in write order, and :meth:`Table.build`, which fails at write time on a missing,
misspelt or mistyped column), and the Arrow types the tables use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    """One column of a table.

    Args:
        name: column name in Parquet and in SQL.
        type: its Arrow type.
        doc: what it holds, with units.
    """

    name: str
    type: pa.DataType
    doc: str


@dataclass(frozen=True)
class Table:
    """A table of the run directory, stored as ``tables/<name>/rank<R>.parquet``."""

    name: str
    doc: str
    columns: tuple[Column, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def build(self, data: Mapping[str, Any]) -> pa.Table:
        """Build an Arrow table from column arrays (lists or numpy arrays) keyed by name.

        Raises:
            KeyError: a column of the schema is missing from ``data`` or ``data`` has extra keys.
        """
        extra = set(data) - set(self.column_names)
        if extra:
            raise KeyError(f"table {self.name!r} has no column(s) {sorted(extra)}")
        arrays = [pa.array(data[c.name], type=c.type) for c in self.columns]
        return pa.Table.from_arrays(arrays, schema=self.schema)


I64 = pa.int64()
I32 = pa.int32()
STR = pa.string()
F64 = pa.float64()
BOOL = pa.bool_()
