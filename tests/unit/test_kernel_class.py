"""Kernel category and Tensor Core verdicts: every kernel name of the shared traces against the
expectations file, plus hand-picked names of architectures the traces lack (Hopper, Turing,
AMD without MFMA)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from dsprof.ingest.kernel_class import classify, classify_names
from dsprof.vocabulary import KERNEL_CATEGORIES as CATEGORIES
from tests.conftest import TRACES, trace_dir

EXPECTED = Path(__file__).parents[1] / "data" / "kernel_names.tsv"


def _expected() -> dict[str, tuple[str, bool | None]]:
    out = {}
    for line in EXPECTED.read_text().splitlines():
        if line.startswith("#"):
            continue
        cat, tc, name = line.split("\t")
        out[name] = (cat, None if tc == "?" else tc == "1")
    return out


def test_expectations_cover_and_match_every_kernel_name_in_the_traces():
    trace_dir("hta_a100_2rank_nccl_r0")
    names = set()
    for path in TRACES.glob("*/*.json.gz"):
        with gzip.open(path) as fh:
            doc = orjson.loads(fh.read())
        if isinstance(doc, dict):
            names |= {e["name"] for e in doc.get("traceEvents", [])
                      if e.get("ph") == "X" and str(e.get("cat", "")).lower() == "kernel"}
    expected = _expected()
    assert names <= set(expected), sorted(names - set(expected))[:5]
    wrong = {n: (classify(n), expected[n]) for n in names if classify(n) != expected[n]}
    assert not wrong, list(wrong.items())[:5]


def test_expectations_file_is_consistent():
    expected = _expected()
    assert len(expected) >= 400
    assert {c for c, _ in expected.values()} <= set(CATEGORIES)
    # only matrix-math kernels may be Tensor Core kernels
    assert all(not tc for c, tc in expected.values()
               if c not in ("gemm", "conv", "attention"))
    # the two the tb_plugin allowlist misses are Tensor Core kernels here
    tc_names = [n for n, (_, tc) in expected.items() if tc]
    assert any(n.startswith("sm80_xmma_fprop_implicit_gemm") for n in tc_names)
    assert any("cutlass_70_wmma_tensorop_f16_s161616gemm" in n for n in tc_names)


@pytest.mark.parametrize("name, category, tc", [
    # Volta / Turing
    ("volta_h884gemm_64x128_ldg8_nn", "gemm", True),
    ("volta_fp16_s884cudnn_fp16_256x128_ldg8_splitK_relu_f2f_exp_small_nhwc2nchw_tn_v1", "conv", True),
    ("turing_fp16_s1688cudnn_fp16_256x128_ldg8_relu_f2f_exp_small_nhwc_tn_v1", "conv", True),
    ("volta_sgemm_128x64_nn", "gemm", False),
    ("maxwell_hgemm_256x128_nt", "gemm", False),
    # Ampere
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_nn", "gemm", True),
    ("ampere_fp16_s16816gemm_fp16_64x64_sliced1x2_ldg8_f2f_stages_64x5_tn", "gemm", True),
    ("cutlass_80_simt_sgemm_128x32_8x5_nn_align1", "gemm", False),
    ("sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize128x128x8_stage3_warpsize2x2x1_ffma_aligna4",
     "gemm", False),
    # Hopper
    (("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_"
      "execute_segment_k_off_kernel__5x_cublas"), "gemm", True),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT", "gemm", True),
    (("void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cute::tuple<int, int, "
      "int>, cutlass::gemm::collective::CollectiveMma<cutlass::gemm::MainloopSm90TmaGmmaWarp"
      "SpecializedCooperative<2>>>>"), "gemm", True),
    ("cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x64_4x1x1_kernel0_0", "attention", True),
    # attention
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, false>>",
     "attention", True),
    (("fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<"
      "cutlass::half_t, cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)"),
     "attention", True),
    (("fmha_cutlassF_f32_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<float, "
      "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)"), "attention", False),
    # AMD
    ("Cijk_Ailk_Bljk_SB_MT64x64x8_SN_1LDSB0_APM1_AF0EM1_AF1EM1_AMAS3_ASE_ASGT_ASAE01", "gemm",
     False),
    ("void ck::kernel_gemm_xdl_cshuffle_v1<ck::GridwiseGemm_k0mk1_k0nk1_mn_xdl_cshuffle_v1>",
     "gemm", True),
    # Triton
    ("triton_tem_fused_mm_0", "gemm", None),
    ("triton_red_fused_sum_1", "reduction", False),
    ("triton_per_fused_native_layer_norm_2", "norm", False),
    ("triton_poi_fused_add_cos_sin_0", "elementwise", False),
    # communication
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
     "communication", False),
    # a dtype in an elementwise name is not matrix math
    ("void at::native::vectorized_elementwise_kernel<4, convert_tf32>", "elementwise", False),
])
def test_architectures_missing_from_the_traces(name, category, tc):
    assert classify(name) == (category, tc)


def test_device_kinds_and_column_form():
    assert classify("Memcpy HtoD (Pageable -> Device)", "memcpy") == ("memcpy", False)
    assert classify("Memset (Device)", "memset") == ("memset", False)
    assert classify("Stream Wait Event", "sync") == ("sync", False)
    cats, tcs = classify_names(["volta_sgemm_64x64_nn", "x", "volta_sgemm_64x64_nn"],
                               ["compute", "memcpy", "compute"])
    assert cats == ["gemm", "memcpy", "gemm"] and tcs == [False, False, False]
