"""Everything later commands read, computed once by the process that ingested the run.

``dsprof import`` has the tables, DuckDB and the analyzers loaded already; computing the
findings and the default ``summary`` and ``gpu`` reports there, and storing them
(:mod:`dsprof.reports.stored`), means the commands a user types next render files instead of
each paying the imports of pyarrow, DuckDB and numpy and a rescan of the tables (issue 16).
"""

from __future__ import annotations

from dsprof.analyzers.registry import analyze
from dsprof.findings_file import Analysis
from dsprof.reports import stored
from dsprof.reports.gpu import gpu_report
from dsprof.reports.summary import summarize
from dsprof.run import Run


def precompute(run: Run) -> Analysis:
    """Run the analyzers (findings.json) and store the default summary and gpu reports.

    The reports are stored after findings.json is written: a stored report's key covers the
    tables and meta.json, which the analysis does not write.
    """
    run.hold_tables_in_memory()  # ~60 queries follow: read the Parquet files once
    findings = analyze(run)
    summary = summarize(run, top=stored.SUMMARY_TOP)
    stored.save_report(run.path, "summary", stored.summary_params(), summary.to_json())
    report = gpu_report(run, top=stored.GPU_TOP)
    stored.save_report(run.path, "gpu", stored.gpu_params(), report.to_json())
    return findings
