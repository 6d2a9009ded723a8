"""What `dsprof import` computes on each shared trace: the findings and the stored summary and
gpu reports, as one JSON value per trace (tests/data/analysis_baseline.json).

Speed work on the analyzers and reports must leave these unchanged (issue 16). Regenerate only
when an analyzer's claims change on purpose:

    python -m tests.analysis_digest > tests/data/analysis_baseline.json
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import orjson

from tests.conftest import TRACES

# keys whose values depend on where or when the run was made, not on what was analyzed
VOLATILE = {"created", "created_at", "path", "run", "run_path", "elapsed_s", "duration_s",
            "generated_at", "dsprof_version", "version", "key", "cache_key", "wall_s"}


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, str):  # where the checkout sits is not what was analyzed
        for root in {str(TRACES.resolve()), str(TRACES)}:
            value = value.replace(root, "<traces>")
    return value


def trace_names() -> list[str]:
    return sorted(p.name for p in TRACES.iterdir() if p.is_dir()) if TRACES.exists() else []


def digest(trace: str, workdir: Path) -> dict:
    """Import one shared trace folder into a run under workdir, return what was stored."""
    from click.testing import CliRunner

    from dsprof.cli import main
    from dsprof.reports import stored

    run = workdir / trace.replace("/", "--")
    res = CliRunner().invoke(main, ["import", "-o", str(run), "--no-progress",
                                    str(TRACES / trace)])
    out: dict = {"exit_code": res.exit_code}
    if res.exit_code != 0:
        return out
    findings = run / "findings.json"
    out["findings"] = _strip(orjson.loads(findings.read_bytes())) if findings.exists() else None
    out["summary"] = _strip(stored.load_report(run, "summary", stored.summary_params()))
    out["gpu"] = _strip(stored.load_report(run, "gpu", stored.gpu_params()))
    return out


def digests(workdir: Path) -> dict[str, dict]:
    """Each shared trace folder imported as one run; a folder whose files are separate runs
    (the import refuses it) is imported file by file."""
    result = {}
    for trace in trace_names():
        whole = digest(trace, workdir)
        if whole["exit_code"] == 0:
            result[trace] = whole
            continue
        for f in sorted(p.name for p in (TRACES / trace).iterdir()):
            result[f"{trace}/{f}"] = digest(f"{trace}/{f}", workdir)
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = digests(Path(tmp))
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2
                                         | orjson.OPT_SORT_KEYS) + b"\n")


if __name__ == "__main__":
    main()
