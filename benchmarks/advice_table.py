"""The table benchmarks/advice.py prints: one row per judged finding, and the tally that says
whether issue 19's aim held (every ranked prediction within 25 % of the measured change)."""

from __future__ import annotations

from benchmarks.advice_judge import WHY_CPU, WHY_UPDATE, WHY_WALL, percent

# the "by pass" column: six passes' means of up to 9.99 ms ("1.44|1.54|1.10|1.30|1.50|1.20")
BY_PASS = 29


def print_table(rows: list[dict], problems: dict[str, str], elapsed: dict[str, float]) -> None:
    def f2(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print()
    print(f"{'case':24} {'finding':22} {'on':>4} {'base ms':>7} {'pred -ms':>9} "
          f"{'meas -ms':>8} {'by pass':>{BY_PASS}} {'95 % interval':>13} {'band pr/st':>11} "
          f"{'rnd':>5} {'err':>6} {'wall -ms':>8}  verdict")
    for r in rows:
        if r["verdict"] in ("MISSED", "found, no knob"):
            print(f"{r['case'][:24]:24} {r['kind'][:22]:22} {'':>{80 + BY_PASS}}  {r['verdict']}")
            continue
        lo, hi = r["interval_ms"]
        interval = "-" if lo is None else f"{lo:.2f}..{hi:.2f}"
        bands = f"{f2(r['paired_band_ms'])}/{f2(r['step_band_ms'])}"
        err = "-" if r["error"] is None else percent(r["error"])
        pred = f2(r["predicted_saving_ms"]) + ("~" if r.get("scaled") else " ")
        by_pass = "|".join(f"{x:.2f}" for x in r.get("pass_changes_ms") or []) or "-"
        passes = len(set(r.get("round_pass") or []))
        rnd = f"{r['rounds']}/{passes}"
        verdict = r["verdict"]
        if r["why_unranked"]:
            verdict += f" ({r['why_unranked']})"
        if r.get("cut_short"):
            verdict += " [cut short: the judge stopped before more rounds]"
        on = {"update": "upd"}.get(r["metric"], r["metric"]) or "-"
        print(f"{r['case'][:24]:24} {r['kind'][:22]:22} {on:>4} "
              f"{f2(r['baseline_ms']):>7} {pred:>9} {f2(r['measured_saving_ms']):>8} "
              f"{by_pass:>{BY_PASS}} {interval:>13} {bands:>11} {rnd:>5} {err:>6} "
              f"{f2(r['wall_saved_ms']):>8}  {verdict}")
    print(f"\non: the time the verdict uses. cpu: {WHY_CPU}. upd: a fix that {WHY_UPDATE} "
          "(SLOWER also when the whole step's CPU time grew beyond its band). wall: a fix "
          f"that {WHY_WALL}. "
          "base ms: the baseline's median in the time judged (upd: the update's). pred: the finding's saving; ~: built from op times, taken as the same share of the "
          "baseline's CPU time (a saving priced in thread CPU time, data.saving_clock, is "
          "compared as it is). meas: mean over rounds of (median step of baseline k - that of "
          "fix k), rank 0's steady steps; by pass: the same mean for each pass's rounds "
          "(benchmarks/advice_passes.py: a finding's rounds after its first ones run in later "
          "passes over all cases, minutes apart). band pr/st: paired, t(0.975, k-1) x sd of "
          "the rounds' changes / sqrt(k); step, 2 standard errors of the pooled steps' medians "
          "(metrics/noise.py); the interval is meas +- the wider. rnd: rounds run / passes they "
          "ran in (more rounds while a ranked verdict was undecided or had under 3, up to "
          "--max-rounds).")
    quiet = [c for c in elapsed if c not in problems and not any(r["case"] == c for r in rows)]
    if quiet:
        print(f"\nno auto-applicable finding with a saving: {', '.join(quiet)}")
    for case, what in problems.items():
        print(f"{case}: {what}")
    ranked = [r for r in rows if r.get("ranked")]
    within = sum(r["verdict"].startswith("within") for r in ranked)
    noise = sum(r["verdict"].startswith("inside the noise") for r in ranked)
    confirmed = sum(r["verdict"].startswith("within 25 %, confirmed") for r in ranked)
    spread = sum(len(set(r.get("round_pass") or [])) > 1 for r in ranked)
    print(f"\n{within}/{len(ranked)} ranked findings within 25 % of the measured change "
          f"({confirmed} confirmed: the whole interval within 25 %), "
          f"{noise} inside the noise (undecided), "
          f"{sum(r['verdict'].startswith('OFF') for r in ranked)} OFF; "
          f"{spread}/{len(ranked)} ranked measured in more than one pass; "
          f"{sum(bool(r.get('cut_short')) for r in rows)} cut short; "
          f"{sum(r['verdict'].startswith('outside') for r in rows)} outside the ranked list; "
          f"{sum(r['verdict'] == 'MISSED' for r in rows)} MISSED; "
          f"{sum(bool(r.get('slower')) for r in rows)} made the step slower "
          f"({sum(bool(r.get('slower')) for r in ranked)} of them ranked); "
          f"{sum(r.get('rounds', 0) for r in rows)} rounds; "
          f"{len(elapsed)} cases in {sum(elapsed.values()) / 60:.1f} min")
