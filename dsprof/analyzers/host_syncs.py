"""Host-device synchronizations inside the step, at the line that asks for them.

Two sources, used together when both exist:

* ``host_syncs`` (dsprof runs, every step): ``.item()``, ``.tolist()``, ``.cpu()``,
  ``.numpy()``, ``nonzero``, ``.to("cpu")``, ``torch.cuda.synchronize()`` and a tensor read by
  Python itself (``if loss < best:``, ``float(loss)``, ``int(n)``) per user line.
  On an accelerator each call waits for all queued work; on CPU nothing waits, so those lines
  are reported as information only (what a GPU run would pay), with no saving.
* The trace (``ops`` + ``kernels``; GPU runs and imported GPU traces): every blocking runtime
  call (``cudaStreamSynchronize``, ``cudaDeviceSynchronize``, ``cudaEventSynchronize``,
  ``cudaMemcpy``, a device-to-host ``cudaMemcpyAsync``, their HIP twins), grouped by the aten op
  that made it (``aten::item``, ``aten::nonzero``, ...), its module and phase.

The saving is not the time the host blocked (the GPU was busy then; that time is not lost) but
the GPU's idle time right after each sync: the device waits while Python catches up and
launches the next kernel. Without the sync the CPU would have queued that work ahead. Measured
per sync as (next kernel start on the device - sync end), summed per step. Not on a rank
whose trace was down-sampled (``ingest_notes.sampled``): the kernel that really came next may
be one the sampling dropped.
"""

from __future__ import annotations

from dsprof.analyzers.claims import GPU_IDLE
from dsprof.analyzers.frameworks import hf_arguments
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.noise import has_column
from dsprof.render.safe_text import one_line

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy", "hipStreamSynchronize", "hipDeviceSynchronize",
              "hipEventSynchronize", "hipMemcpy", "hipMemcpyWithStream")

_FIX = {
    "item": ("# Keep the value on the device; read it once every N steps (or at the end).\n"
             "# A loop that sums it there already (total += loss.detach()) moves only the read:\n"
             "running_loss += loss.detach()          # no sync\n"
             "if step % log_every == 0:\n"
             "    print(running_loss.item() / log_every)  # one sync per N steps\n"
             "    running_loss.zero_()"),
    "tolist": "# Accumulate on the device and convert once per N steps, not every step.",
    "cpu": "# Copy to the host only when the value is used (logging every N steps), and with\n"
           "# x.to('cpu', non_blocking=True) into pinned memory when it must be every step.",
    "numpy": "# Same as .cpu(): move metrics to the host once per N steps, not every step.",
    "to_cpu": "# x.to('cpu', non_blocking=True) into pinned memory, or only every N steps.",
    "nonzero": ("# nonzero/boolean-mask indexing must read the result size from the device.\n"
                "# Use a fixed-size form: torch.where(mask, x, 0) or masked_fill, or pass\n"
                "# size= to torch.nonzero_static."),
    "synchronize": ("# torch.cuda.synchronize() in the loop serializes CPU and GPU. Remove it;\n"
                    "# for timing use torch.cuda.Event(enable_timing=True) pairs."),
    "float": ("# float(t) reads the value from the device like t.item(). Keep it there and read\n"
              "# it once every N steps (or at the end):\n"
              "running_loss += loss.detach()          # no sync\n"
              "if step % log_every == 0:\n"
              "    print(float(running_loss) / log_every)  # one sync per N steps\n"
              "    running_loss.zero_()"),
    "int": ("# int(t) reads the value from the device like t.item(). Count on the device and\n"
            "# convert once every N steps:\n"
            "correct += (pred == y).sum()           # a tensor: no sync\n"
            "if step % log_every == 0:\n"
            "    print(int(correct) / seen)          # one sync per N steps"),
    "repr": ("# Printing a tensor (print(t), str(t), f\"{t}\") copies it to the host and waits\n"
             "# for the device. Print a number read every N steps instead:\n"
             "if step % log_every == 0:\n"
             "    print(f\"loss {loss.item():.4f}\")     # one sync per N steps"),
    "bool": ("# A tensor used as a condition (if / while / and / or / assert / bool()) is read\n"
             "# from the device to decide the branch. Decide on the device instead:\n"
             "#   best = torch.minimum(best, loss.detach())    # not: if loss < best: best = loss\n"
             "#   x = torch.where(cond, a, b)                  # not: x = a if cond else b\n"
             "#   torch._assert_async(torch.isfinite(loss))    # not: assert torch.isfinite(loss)\n"
             "# or test the condition once every N steps."),
}

# How a call reads in a sentence: the slots Python calls on a tensor are written as the script
# writes them (``if loss < best:`` is ``bool(tensor)``), torch's methods with ``()``.
_LABELS = {"bool": "bool(tensor)", "float": "float(tensor)", "int": "int(tensor)",
           "repr": "print(tensor)"}
# what bool(tensor) is in the script's words, said before its count
_CONDITION = ("A tensor used as a condition (if, while, and/or, assert or bool() on it) reads "
              "its value from the device. ")


def _label(call: str) -> str:
    return _LABELS.get(call, f"{call}()")


# A sync in a framework's own code, by the call, the folder of its line and (where the folder
# has other syncs) its functions: the framework's switch, not a loop the script does not have.
# Ignite's create_supervised_trainer reads the loss with .item() in its default
# output_transform (ignite/engine/__init__.py) every iteration; the script sets what the step
# returns.
_LIBRARY_FIX = {
    ("item", "ignite/engine/", ()): (
        "# Ignite: the trainer's default output_transform reads loss.item() every iteration.\n"
        "# Keep the loss on the device and read it where it is logged (every N iterations):\n"
        "trainer = create_supervised_trainer(\n"
        "    model, optimizer, loss_fn, device=device,\n"
        "    output_transform=lambda x, y, y_pred, loss: loss.detach())\n"
        "# handlers then read engine.state.output.item() (or format it: f\"{out:.4f}\")"),
    # skorch's fit loop records every batch's loss in net.history (run_single_epoch)
    ("item", "skorch/", ()): (
        "# skorch records each batch's loss in net.history with .item() (its fit loop, for\n"
        "# training and validation batches alike); no switch defers it. Nothing to change in\n"
        "# the script: on a GPU it is one sync per batch, after the batch's kernels are queued."),
    # Pyro's validation (on by default: pyro.poutine.util.is_validation_enabled) checks each
    # site's log-prob, and its gradient in backward, for nan and inf: warn_if_nan/warn_if_inf
    ("bool", "pyro/util.py", ("warn_if_nan", "warn_if_inf")): (
        "# Pyro: validation (on by default) checks every sample site's log-prob, and its\n"
        "# gradient, for nan/inf on the host: a sync per site and step on a GPU. It checks only;\n"
        "# the inference is the same. Once the model is known to be sound, turn it off:\n"
        "pyro.enable_validation(False)"),
    # torchmetrics' aggregation metrics (MeanMetric, SumMetric, ...) test their inputs for nan
    # in update() unless nan_strategy="disable" (torchmetrics/aggregation.py)
    ("bool", "torchmetrics/aggregation.py", ("_cast_and_nan_check_input",)): (
        "# torchmetrics: an aggregation metric (MeanMetric, SumMetric, ...) tests each update's\n"
        "# values for nan on the host (nan_strategy=\"error\" by default). Where the values\n"
        "# cannot be nan (a loss you already check), skip the test:\n"
        "metric = MeanMetric(nan_strategy=\"disable\")"),
    # the Trainer's logging_nan_inf_filter (on by default): `torch.isnan(tr_loss_step) or
    # torch.isinf(tr_loss_step)` after every training_step, two reads of the loss a step, in
    # _inner_training_loop (4.x) or the _run_epoch it calls (5.x)
    ("bool", "transformers/trainer.py", ("_inner_training_loop", "_run_epoch")): (
        "# HF Trainer: logging_nan_inf_filter (on by default) tests every micro-batch's loss\n"
        "# with torch.isnan(loss) or torch.isinf(loss) on the host: two syncs per\n"
        "# training_step on a GPU (per micro-batch under gradient accumulation). It only\n"
        "# changes what is logged (a nan or inf loss counts as the mean of the window so far);\n"
        "# the gradients and the update are the same. Turn it off:\n"
        "args = TrainingArguments(..., logging_nan_inf_filter=False)"),
}


def _fix(call: str, site: str | None, caller: str | None = None,
         function: str | None = None) -> str:
    """The fix for ``call`` at ``site`` in ``function``: the framework's when the line is in
    its code; for a line in another installed package (``caller``: the script's line that led
    there), what the script can and cannot do about it."""
    for (lib_call, folder, functions), fix in _LIBRARY_FIX.items():
        if (call == lib_call and (site or "").startswith(folder)
                and (not functions or function in functions)):
            return fix
    if caller:
        # read from the run directory: kept on their comment line
        site, caller, label = one_line(site or ""), one_line(caller), one_line(_label(call))
        package = site.split("/", 1)[0]
        return (f"# This {label} is in {package}'s own code ({site}), reached from the script "
                f"at {caller}:\n# the script cannot move it. On a GPU each call waits for the "
                "queued kernels; look\n"
                f"# for {package}'s option to read the value less often (a logging or progress "
                "interval);\n# where it has none, the sync is part of what the library costs.")
    return _FIX.get(call, "")


class HostSyncs(Analyzer):
    name = "host_syncs"
    requires = ()
    claims = ((GPU_IDLE, ("host_sync.",)),)

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.nonempty("host_syncs") or ctx.nonempty("kernels"):
            return None
        return "needs the host_syncs table (a dsprof run) or GPU kernels in the trace"

    # A trace without steps has no "per step" to speak of: its syncs are not reported, and the
    # reason is said (``no_finding_reason``).

    def run(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        self.no_finding_reason = (
            "the trace marks no steps (no ProfilerStep spans): the GPU idle time after a "
            "sync is measured up to the next kernel of the same step"
            if ctx.nonempty("kernels") and not ctx.nonempty("steps")
            and not ctx.nonempty("host_syncs") else None)
        trace = (_trace_syncs(ctx) if all(ctx.nonempty(t) for t in ("kernels", "ops", "steps"))
                 else [])
        # a down-sampled trace dropped kernels: the gap after a sync is not idle time there
        trace = [t for t in trace if int(t["rank"]) not in ctx.sampled_ranks]
        if ctx.nonempty("host_syncs") and ctx.steps_missing:
            # a sync's calls per step are the finding: with no steps they cannot be counted
            self.no_finding_reason = ctx.steps_missing
        elif ctx.nonempty("host_syncs"):
            out.extend(self._sites(ctx, trace))
        elif trace:
            out.extend(self._trace_findings(ctx, trace))
        return out

    def _sites(self, ctx: Context, trace: list[dict]) -> list[Finding]:
        # Calls after the last step boundary (a final loss.item()) are not in a step.
        skip0 = "AND step > 0" if ctx.meta.get("source") == "run" else ""
        # per rank: a site's calls and steps are one rank's (2 ranks read "0.5x per step" beside
        # "29 calls in 29 steps", and 3 ranks dropped a once-a-step read as occasional)
        rank_steps = dict(ctx.run.sql(
            f"SELECT rank, count(*) FROM steps WHERE true {skip0} GROUP BY rank"))
        # runs recorded before the caller column read it as null
        caller = "min(caller)" if has_column(ctx.run, "host_syncs", "caller") else "NULL"
        rows = ctx.run.sql(f"""
            SELECT rank, call, site, function, device, sum(count), sum(total_ns), max(max_ns),
                   count(DISTINCT step), min(step), {caller}
            FROM host_syncs h WHERE true {skip0}
              AND EXISTS (SELECT 1 FROM steps s WHERE s.rank = h.rank AND s.step = h.step)
            GROUP BY ALL ORDER BY sum(total_ns) DESC, site, call""")
        idle_per_step = sum(t["idle_ns"] for t in trace) / max(len(ctx.profiled_steps), 1)
        gpu_calls = sum(r[5] for r in rows if r[4] != "cpu") or 1
        # A script that runs on a GPU keeps some tensors on the CPU (nanoGPT's eval losses,
        # a sampler's mask): reading those waits for nothing on this run or any other. Only a
        # CPU-only run's reads stand for what the script would pay on a GPU.
        uses_gpu = any(r[4] != "cpu" for r in rows) or ctx.nonempty("kernels")
        out = []
        for rank, call, site, function, device, count, total, longest, steps, first, via in rows:
            n_steps = rank_steps.get(rank) or 1
            per_step = count / n_steps
            on_cpu = device == "cpu"
            if on_cpu and uses_gpu:
                continue
            reached = f", reached from {via}" if via else ""
            if steps < 0.5 * n_steps:
                # occasional host reads (logging every N steps, a check every eval) are the
                # advice itself, on a GPU as on the CPU
                continue
            if on_cpu:
                saving, conf = 0.0, "high"
                title = (f"{_label(call)} at {site} runs {per_step:.1f}x {ctx.per_step}: "
                         "free on CPU, a host-device sync on a GPU")
                why = (f"{_CONDITION if call == 'bool' else ''}"
                       f"{count} calls in {steps} steps ({total / 1e6:.2f} ms in all). On CPU "
                       "they wait for nothing; on a GPU each one blocks Python until every "
                       "queued kernel has run, leaving the GPU idle while the next kernels "
                       "are launched.")
            else:
                # The GPU idle time measured after syncs in the trace, shared out by calls.
                saving = idle_per_step * count / gpu_calls if trace else 0.0
                conf = "medium" if trace else "low"
                title = (f"Remove the per-step {_label(call)} at {site}: {per_step:.1f} "
                         f"host-device syncs {ctx.per_step} block {total / n_steps / 1e6:.2f} ms")
                why = (f"{_CONDITION if call == 'bool' else ''}"
                       f"{count} calls on {device} in {steps} steps block the host "
                       f"{total / 1e6:.1f} ms in all (longest {longest / 1e6:.2f} ms)."
                       + (f" After syncs the GPU sat idle {idle_per_step / 1e6:.2f} ms per "
                          "profiled step (measured in the trace): that is the saving."
                          if trace else " No kernel trace to measure the GPU idle time that "
                          "follows, so no saving is estimated."))
            out.append(Finding(
                analyzer=self.name, kind="host_sync.call", key=f"{call}|{site}",
                title=title, saving_s=saving / 1e9, confidence=conf, explanation=why,
                evidence=(Evidence(f"{_label(call)} in {function} at {site}{reached}: {count} "
                                   f"calls, {total / 1e6:.2f} ms", rank=int(rank),
                                   step=int(first), site=site, value=total / 1e6),),
                fix=hf_arguments(ctx, _fix(call, site, via, function)),
                verify="dsprof run ... and compare host_syncs with dsprof summary"))
        return out

    def _trace_findings(self, ctx: Context, trace: list[dict]) -> list[Finding]:
        steps = max(len(ctx.profiled_steps), 1)
        groups: dict[tuple, list[dict]] = {}
        for t in trace:
            groups.setdefault((t["rank"], t["op"], t["module"], t["phase"]), []).append(t)
        out = []
        for (rank, op, module, phase), items in sorted(groups.items()):
            idle = sum(t["idle_ns"] for t in items) / steps
            n_syncs = len({t["parent"] if t["parent"] is not None else t["id"] for t in items})
            blocked = sum(t["dur_ns"] for t in items) / steps
            where = f"{op}" + (f" in {module}" if module else "") + (f" ({phase})" if phase else "")
            out.append(Finding(
                analyzer=self.name, kind="host_sync.trace", key=f"{op}|{module}|{phase}",
                title=(f"{n_syncs / steps:.1f} host-device syncs {ctx.per_step} from {where}: "
                       f"the GPU then idles {idle / 1e6:.2f} ms {ctx.per_step}"),
                saving_s=idle / 1e9, confidence="medium",
                explanation=(f"{', '.join(sorted({t['call'] for t in items}))} made by {where} "
                             f"block the host {blocked / 1e6:.2f} ms {ctx.per_step}; after "
                             f"each, the device waits for the next launch ({idle / 1e6:.2f} ms "
                             f"{ctx.per_step} over {steps} profiled steps)."),
                evidence=tuple(Evidence(f"{t['call']} {t['dur_ns'] / 1e3:.0f} us, GPU idle "
                                        f"{t['idle_ns'] / 1e3:.0f} us after", rank=int(rank),
                                        step=t["step"], start_ns=t["start_ns"],
                                        end_ns=t["start_ns"] + t["dur_ns"] + t["idle_ns"],
                                        op_ids=(t["id"],), module=module or None)
                               for t in items[:10]),
                fix=_fix_for_op(op),
                verify="re-run the job with the fix and compare with dsprof diff"))
        return out


def _fix_for_op(op: str) -> str:
    for key, call in (("item", "item"), ("_local_scalar_dense", "item"),
                      ("nonzero", "nonzero"), ("copy_", "cpu"), ("_to_copy", "to_cpu")):
        if key in op:
            return _FIX[call]
    return _FIX["synchronize"]


def _trace_syncs(ctx: Context) -> list[dict]:
    """Every blocking runtime call inside a step with its aten op, module, phase and the GPU
    idle time after it (up to the next kernel of the same step; a sync that no kernel follows
    in its step counts no idle time: the step ended there)."""
    names = ", ".join(f"'{n}'" for n in SYNC_CALLS)
    rows = ctx.run.sql(f"""
        WITH syncs AS (
            SELECT o.rank, o.id, o.step, o.name AS call, o.start_ns, o.dur_ns, o.parent_id
            FROM ops o
            WHERE o.cat = 'cuda_runtime' AND o.step IS NOT NULL AND (o.name IN ({names})
               OR (o.name IN ('cudaMemcpyAsync', 'hipMemcpyAsync') AND EXISTS (
                   SELECT 1 FROM kernels k WHERE k.rank = o.rank AND k.launch_id = o.id
                   AND k.name LIKE '%DtoH%'))))
        SELECT s.rank, s.id, s.parent_id, s.step, s.call, s.start_ns, s.dur_ns,
               coalesce(p.name, s.call), coalesce(p.module, ''), coalesce(p.phase, ''),
               (SELECT min(k.start_ns) FROM kernels k
                WHERE k.rank = s.rank AND k.start_ns >= s.start_ns + s.dur_ns
                  AND k.start_ns < st.end_ns) AS next_kernel
        FROM syncs s LEFT JOIN ops p ON p.rank = s.rank AND p.id = s.parent_id
        JOIN steps st ON st.rank = s.rank AND st.step = s.step
        ORDER BY s.rank, s.start_ns""")
    out = []
    for rank, id_, parent, step, call, start, dur, op, module, phase, nxt in rows:
        out.append({"rank": rank, "id": id_, "parent": parent, "step": step, "call": call,
                    "start_ns": start, "dur_ns": dur, "op": op, "module": module,
                    "phase": phase, "idle_ns": 0, "next_kernel": nxt})
    _share_idle_gaps(out)
    return out


def _share_idle_gaps(syncs: list[dict]) -> None:
    """Charge each idle gap once. Syncs that the same next kernel ends (eight syncs in a row in
    DDP's forward, one kernel after them) share one gap, from the first one's end to that
    kernel: each sync gets the part from its end to the next sync's end (the last one, up to
    the kernel), so the parts add up to the gap, never to eight times it."""
    by_gap: dict[tuple[int, int], list[dict]] = {}
    for t in syncs:
        if t["next_kernel"] is not None:
            by_gap.setdefault((t["rank"], t["next_kernel"]), []).append(t)
    for (_, nxt), group in by_gap.items():
        group.sort(key=lambda t: t["start_ns"] + t["dur_ns"])
        ends = [t["start_ns"] + t["dur_ns"] for t in group]
        for i, t in enumerate(group):
            stop = min(nxt, ends[i + 1]) if i + 1 < len(group) else nxt
            t["idle_ns"] = max(0, stop - ends[i])
