"""Arrival skew of each collective across ranks: who arrives last, and who waits for whom.

A collective cannot finish before its last rank arrives, so the ranks that came earlier wait.
Matching: the k-th call of a collective of one type and size (input bytes) on a process group
within a step is the same collective on every rank (calls are ordered by the host call, then
the transfer start). Matching by type alone paired an all-reduce of 1.4 MB on one rank with one
of 1.8 GB on another where a trace was down-sampled.
Arrival: the host call for gloo (an async DDP all-reduce is issued when its bucket is ready,
while the worker thread may start it later), the device kernel start for NCCL (HTA's straggler
analysis compares the collective kernels' starts), the host span otherwise. Ranks on another
host than rank 0 are shifted by their measured clock offset (meta.json ``clock``); on one host
all ranks read the same clock.
Point-to-point transfers (send, recv) are no collective and are left out: a send on one rank
pairs with a recv on another, and the k-th send of two pipeline stages are different transfers
(a first stage sends activations while the last sends gradients, a schedule's bubble apart);
matched as one they made rank 0 of a 2-stage pipeline "wait 20.5 ms a step for later ranks".

Per collective: ``skew_ns`` = last arrival - first arrival, ``last_rank``, and ``gap_ns`` = last
arrival - the next-latest arrival (what the job would gain per call if the last rank had come
with the others). Per rank and step: how often it was last, the longest it waited for others,
and the largest gap it caused (a step's collectives overlap in time, so these are maxima, not
sums); per rank, their sums over steps. All of it is SQL over every rank's ``comms`` Parquet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_MATCHED = """
    offsets(rank, offset_ns) AS (SELECT * FROM (VALUES {offsets}) v(rank, offset_ns)),
    c AS (
        SELECT c.rank, c.step, coalesce(c."group", '') AS g,
               c.collective || '/' || coalesce(CAST(c.in_bytes AS VARCHAR), '?') AS collective,
               (CASE WHEN c.source = 'gloo' THEN coalesce(c.call_ns, c.start_ns)
                     ELSE c.start_ns END) - coalesce(o.offset_ns, 0) AS arrival,
               row_number() OVER (PARTITION BY c.rank, c.step, coalesce(c."group", ''),
                                  c.collective
                                  ORDER BY coalesce(c.call_ns, c.start_ns), c.start_ns) AS k
        FROM comms c LEFT JOIN offsets o ON o.rank = c.rank
        WHERE c.step IS NOT NULL AND c.collective NOT IN ('send', 'recv')),
    ranked AS (
        SELECT *, row_number() OVER (PARTITION BY step, g, collective, k
                                     ORDER BY arrival DESC, rank) AS pos,
               count(*) OVER (PARTITION BY step, g, collective, k) AS n,
               max(arrival) OVER (PARTITION BY step, g, collective, k) AS last_arrival
        FROM c),
    m AS (
        SELECT step, g, collective, k, any_value(n) AS n,
               max(arrival) - min(arrival) AS skew_ns,
               max(CASE WHEN pos = 1 THEN rank END) AS last_rank,
               max(arrival) - coalesce(max(CASE WHEN pos = 2 THEN arrival END), max(arrival))
                   AS gap_ns
        FROM ranked GROUP BY step, g, collective, k HAVING count(*) > 1)
"""


@dataclass(frozen=True)
class RankSkew:
    """One rank's share of the waiting, over every collective matched across ranks."""

    rank: int
    collectives: int
    times_last: int
    wait_ns: int
    """Time this rank waited for later ranks: per step, its longest wait at one collective
    (the collectives of a step overlap, so waits are not added up), summed over steps."""
    gap_caused_ns: int
    """Per step, the most this rank was behind the next-latest rank at a collective where it
    came last, summed over steps."""
    steps: int


def offsets_sql(meta: dict[str, Any]) -> str:
    """``(rank, offset)`` VALUES rows: the measured offsets of ranks on another host than
    rank 0 (on the same host every rank reads the same clock)."""
    clocks = ((meta.get("clock") or {}).get("ranks") or {})
    host0 = (clocks.get("0") or {}).get("host")
    rows = []
    for rank, rec in clocks.items():
        if isinstance(rec, dict) and rec.get("host") != host0 and rec.get("offset_ns"):
            rows.append(f"({int(rank)}, {int(rec['offset_ns'])})")
    return ", ".join(rows) or "(-1, 0)"


def rank_skew(con: Any, meta: dict[str, Any]) -> list[RankSkew]:
    """Per rank; empty when fewer than two ranks share collectives."""
    rows = con.execute(f"""
        WITH {_MATCHED.format(offsets=offsets_sql(meta))},
        per_step AS (
            SELECT r.rank, r.step, count(*) AS n, sum((r.pos = 1)::INT) AS last,
                   max(r.last_arrival - r.arrival) AS wait_ns,
                   max(CASE WHEN r.pos = 1 THEN m.gap_ns ELSE 0 END) AS gap_ns
            FROM ranked r JOIN m USING (step, g, collective, k) GROUP BY r.rank, r.step)
        SELECT rank, sum(n), sum(last), sum(wait_ns)::BIGINT, sum(gap_ns)::BIGINT, count(*)
        FROM per_step GROUP BY rank ORDER BY rank""").fetchall()
    return [RankSkew(int(a), int(b), int(c), int(d), int(e), int(f)) for a, b, c, d, e, f in rows]


def collective_skew(con: Any, meta: dict[str, Any], limit: int = 20) -> list[dict[str, Any]]:
    """The most skewed collectives, largest first."""
    cur = con.execute(f"""
        WITH {_MATCHED.format(offsets=offsets_sql(meta))}
        SELECT step, g AS "group", collective, k AS call, n AS ranks, skew_ns, last_rank,
               gap_ns
        FROM m ORDER BY skew_ns DESC, step, collective, k LIMIT {int(limit)}""")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def lateness_by_step(con: Any, meta: dict[str, Any], rank: int) -> list[int]:
    """Per step (in step order), ``rank``'s mean lateness over the step's matched collectives:
    its arrival minus the latest other rank's, negative where it was not last. A rank held back
    by its work is late every step; one that a busy machine delayed once is not."""
    rows = con.execute(f"""
        WITH {_MATCHED.format(offsets=offsets_sql(meta))},
        others AS (SELECT step, g, collective, k, max(arrival) AS other_last
                   FROM ranked WHERE rank <> ? GROUP BY step, g, collective, k),
        mine AS (SELECT step, g, collective, k, arrival FROM ranked WHERE rank = ?)
        SELECT mine.step, avg(mine.arrival - others.other_last)
        FROM mine JOIN others USING (step, g, collective, k)
        GROUP BY mine.step ORDER BY mine.step""", [rank, rank]).fetchall()
    return [int(late) for _, late in rows]
