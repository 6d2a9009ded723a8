"""The one device table: exact model matching, per-GCD figures, every name we have seen."""

from __future__ import annotations

import gzip

import orjson
import pytest

from dsprof.devices import BF16, FP16, FP32, TF32, lookup
from tests.conftest import REPO, all_trace_files

VENDOR_NAMES = [tuple(line.split("\t")) for line in
                (REPO / "tests/data/device_names.tsv").read_text().splitlines()
                if line and not line.startswith("#")]
# names in the shared traces that are deliberately unknown: ROCm reports the MI250 of HTA's
# trace as a generic "AMD Radeon Graphics", which names no model
UNKNOWN_IN_TRACES = {"AMD Radeon Graphics"}


@pytest.mark.parametrize(("name", "row"), VENDOR_NAMES, ids=[n for n, _ in VENDOR_NAMES])
def test_every_vendor_name_matches_its_own_row(name, row):
    peak = lookup(name)
    assert (peak.name if peak else "-") == row


def test_a_model_never_matches_a_longer_one_by_substring():
    # L4 / L40 / L40S are three different cards (121 / 181 / 362 TFLOPS bf16)
    assert [lookup(f"NVIDIA {m}").tflops[BF16] for m in ("L4", "L40", "L40S")] == \
        [121.0, 181.0, 362.0]
    assert lookup("NVIDIA H100 PCIe").tflops[BF16] < lookup("NVIDIA H100 80GB HBM3").tflops[BF16]
    assert lookup("Tesla V100S-PCIE-32GB").name != lookup("Tesla V100-PCIE-16GB").name


def test_mi250x_figures_are_per_gcd_half_the_package():
    # the package's datasheet: 383 TFLOPS fp16/bf16, 3.2768 TB/s; torch sees one GCD
    mi250x = lookup("AMD Instinct MI250X")
    assert mi250x.tflops[BF16] == pytest.approx(383.0 / 2)
    assert mi250x.memory_gbps == pytest.approx(3276.8 / 2)


def test_every_row_has_fp32_and_a_low_precision_peak_and_bandwidth():
    for name, row in VENDOR_NAMES:
        peak = lookup(name)
        if peak is None:
            continue
        assert peak.tflops[FP32] > 0 and peak.tflops[FP16] >= peak.tflops[FP32], row
        assert peak.memory_bytes_s and peak.memory_bytes_s > 1e11, row
        if TF32 in peak.tflops:
            assert peak.tflops[FP32] <= peak.tflops[TF32] <= peak.tflops[FP16], row


def _trace_device_names() -> set[str]:
    names = set()
    for path in all_trace_files():
        if not path.name.endswith(".json.gz"):
            continue
        try:
            doc = orjson.loads(gzip.decompress(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(doc, dict):
            names |= {d["name"] for d in doc.get("deviceProperties") or [] if d.get("name")}
    return names


def test_every_device_name_in_the_shared_traces_is_known_or_deliberately_unknown():
    names = _trace_device_names()
    if not names:
        pytest.skip("../shared/traces is absent")
    assert {"NVIDIA A100-PG509-200", "Tesla V100-SXM2-32GB"} <= names
    for name in names:
        assert (lookup(name) is None) == (name in UNKNOWN_IN_TRACES), name
