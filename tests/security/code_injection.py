"""A real run directory whose names carry a line of code: what a fix to paste may not grow.

A fix is code the user pastes and a verify line is a command they run, and both are built
from what a run directory says: module paths (``model.blocks[i].act.compile()``), the script's
lines (``# at train.py:38``), the statement that leaked a graph, the command line. A run
directory is anyone's data (a colleague's, an imported trace), so :func:`inject` rewrites every
such name in a real run with ``PAYLOAD`` (a line break, then a line of code), and
:func:`injected` says where it came out as code.

The rewrite keeps a run's structure so that the same findings still fire: each segment of a
module path gets the payload (``M.blocks.0`` -> ``M<P>.blocks<P>.0``, so a parent stays the
prefix of its children and layer indices still fold), and a ``path:line`` site gets it inside
the path (its line number stays a number).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# no dot in it: a module path's segments stay its segments
PAYLOAD = "\nimport os  # INJECTED"
# a placeholder of verify's template in it too: an argument that says {run} stays that
SHELL_PAYLOAD = "\n; touch INJECTED {run} #"
# the run directory's own name: a quote ends a shell word, a line break starts a command
HOSTILE_NAME = "run\n; touch INJECTED #'{id}"


def _segment(text: str) -> str:
    return text if text.isdigit() or text in ("", "*") else text + PAYLOAD


def module_path(text: str) -> str:
    return ".".join(_segment(p) for p in text.split("."))


def site(text: str) -> str:
    path, sep, line = text.rpartition(":")
    return f"{path}{PAYLOAD}{sep}{line}" if sep and line.isdigit() else text + PAYLOAD


def name(text: str) -> str:
    return text + PAYLOAD


# (table, column) -> how its text is rewritten; ops.name only where the op is a module's call
_REWRITE: dict[tuple[str, str], Callable[[str], str]] = {
    ("ops", "module"): module_path, ("ops", "name"): module_path,
    ("memory", "module"): module_path, ("modules", "name"): module_path,
    ("anomalies", "module"): module_path, ("grad_holders", "name"): name,
    ("host_syncs", "site"): site, ("host_syncs", "caller"): site,
    ("host_syncs", "function"): name, ("host_syncs", "call"): name,
    ("dataloaders", "site"): site,
    ("dataloaders", "dataset"): name, ("stacks", "site"): site,
    ("steps", "save_site"): site, ("steps", "save_call"): name,
    ("grad_holders", "site"): site, ("grad_holders", "statement"): name,
    ("grad_holders", "function"): name, ("anomalies", "site"): site,
    ("anomalies", "code"): name,
}


def _rewrite_table(part: Path, table_name: str) -> None:
    data = pq.read_table(part)
    for i, col in enumerate(data.column_names):
        rewrite = _REWRITE.get((table_name, col))
        if rewrite is None:
            continue
        values = data.column(i).to_pylist()
        new = [None if v is None else rewrite(v) for v in values]
        if (table_name, col) == ("ops", "name"):
            cats = data.column("cat").to_pylist()
            new = [n if c == "module" else v for n, v, c in zip(new, values, cats, strict=True)]
        field = data.schema.field(i)
        data = data.set_column(i, field, pa.array(new, field.type))
    pq.write_table(data, part)


def inject(src: Path, dst: Path) -> Path:
    """A copy of the run directory ``src`` at ``dst``, its names carrying ``PAYLOAD`` and its
    command line ``SHELL_PAYLOAD``, with no findings or reports yet."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("findings.json", "reports"))
    for part in (dst / "tables").glob("*/*.parquet"):
        _rewrite_table(part, part.parent.name)
    meta_path = dst / "meta.json"
    meta = json.loads(meta_path.read_text())
    target = meta.get("target")
    if isinstance(target, dict) and target.get("argv"):
        target["argv"] = [target["argv"][0], *(a + SHELL_PAYLOAD for a in target["argv"][1:]),
                          "--tag" + SHELL_PAYLOAD]
    meta_path.write_text(json.dumps(meta))
    return dst


def injected(finding: object) -> list[str]:
    """Where a finding gave the payload as code: a line of its fix that starts with the
    payload's code, or a line break in its verify line outside a shell word in single quotes
    (what ``shlex.quote`` writes; the verify line may be prose around a command, so it is not
    parsed as a whole)."""
    out = []
    fix = getattr(finding, "fix", "") or ""
    for line in fix.splitlines():
        if line.lstrip().startswith(PAYLOAD.strip()):
            out.append(f"fix line: {line!r}")
    verify = getattr(finding, "verify", "") or ""
    quoted = [m.span() for m in re.finditer(r"'[^']*'", verify)]
    for m in re.finditer("\n", verify):
        if not any(a < m.start() < b for a, b in quoted):
            out.append(f"verify breaks its line outside quotes: {verify!r}")
            break
    return out
