"""The run directory's schema version, apart from the table declarations in
:mod:`dsprof.schema` (which import pyarrow): reading meta.json, as a command rendering a stored
report does (:mod:`dsprof.reports.stored`), must not import pyarrow.

Bump it whenever a column changes meaning or type, or a table is added; a reader refuses a run
written with a newer version than its own.
"""

SCHEMA_VERSION = 4
