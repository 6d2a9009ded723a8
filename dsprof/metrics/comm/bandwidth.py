"""Collective bandwidth per collective type, against the link's nominal peak when known.

``algbw``/``busbw`` per call are in the comms table (nccl-tests' definitions, see
dsprof/ingest/comms.py). Here they are summarized per collective (median over calls, and the
byte-weighted mean, which is total bytes over total time) and busbw is compared with the
nominal per-direction bandwidth of the GPUs' interconnect, which is what nccl-tests' busbw is
meant to approach: NVLink 2 (V100) 150 GB/s, NVLink 3 (A100 SXM) 300 GB/s, NVLink 4
(H100/H200 SXM) 450 GB/s; PCIe cards: gen 3 x16 16 GB/s,
gen 4 32 GB/s, gen 5 64 GB/s. Unknown devices (and CPU/gloo runs) have no peak. A job across
nodes is bound by the network instead, which no trace records: a job whose ranks ran on more
than one host (the session's clock records each rank's host), or of more than 8 ranks when the
hosts are not known (an imported trace), gets no NVLink/PCIe peak. ``peak_pct`` compares the
byte-weighted busbw (total bytes over total time), not the median over calls: a median over a
1.4 MB and a 1.8 GB all-reduce describes neither.
"""

from __future__ import annotations

from typing import Any

from dsprof.devices import lookup
from dsprof.manifest import RunManifest, manifest_of


def nominal_peak(device_names: list[str]) -> tuple[float, str, str] | None:
    """(GB/s per direction, link, device) for the first device whose link the one device
    table (:mod:`dsprof.devices`) knows, else None."""
    for name in device_names:
        peak = lookup(name)
        if peak is not None and peak.link is not None:
            return peak.link[0], peak.link[1], name
    return None


def device_names(meta: RunManifest | dict[str, Any]) -> list[str]:
    return manifest_of(meta).accelerator_names()


def bandwidth_summary(con: Any, meta: RunManifest | dict[str, Any]) -> list[dict[str, Any]]:
    """Per collective: calls, bytes, median algbw and busbw (GB/s), byte-weighted busbw, and
    the share of the nominal peak."""
    peak = None if crosses_nodes(meta) else nominal_peak(device_names(meta))
    rows = con.execute("""
        SELECT collective, count(*) AS calls, sum(in_bytes) AS bytes,
               median(algbw_gbps) AS algbw, median(busbw_gbps) AS busbw,
               sum(busbw_gbps * dur_ns) / nullif(sum(dur_ns) FILTER (WHERE busbw_gbps IS NOT NULL), 0)
                   AS busbw_weighted
        FROM comms GROUP BY collective ORDER BY sum(dur_ns) DESC""").fetchall()
    out = []
    for coll, calls, nbytes, algbw, busbw, weighted in rows:
        out.append({"collective": coll, "calls": int(calls), "bytes": int(nbytes or 0),
                    "algbw_gbps": algbw, "busbw_gbps": busbw,
                    "busbw_weighted_gbps": weighted,
                    "peak_gbps": peak[0] if peak else None,
                    "link": peak[1] if peak else None,
                    "peak_pct": 100.0 * weighted / peak[0] if peak and weighted else None})
    return out


GPUS_PER_NODE = 8


def crosses_nodes(meta: RunManifest | dict[str, Any]) -> bool:
    """The job's ranks ran on more than one host: recorded hosts differ, or (no hosts known)
    more ranks than one node holds."""
    raw = manifest_of(meta).raw
    clocks = (raw.get("clock") or {}).get("ranks") or {}
    hosts = {rec.get("host") for rec in clocks.values() if isinstance(rec, dict)
             and rec.get("host")}
    if hosts:
        return len(hosts) > 1
    world = manifest_of(meta).world_size or 1
    return int(world) > GPUS_PER_NODE
