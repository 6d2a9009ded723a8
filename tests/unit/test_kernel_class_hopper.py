"""Kernel names an H100/H200 run records, as public H100 profiles spell them (no Hopper trace is
among ../shared/traces): the classifications the GPU acceptance's --tf32 and bf16 rows rely on."""

from __future__ import annotations

import pytest

from dsprof.ingest.kernel_class import classify

HOPPER = [
    # fp32 cublasSgemm on H100 still runs an sm_80 FFMA kernel: CUDA cores
    (("sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize32x32x8_stage3_warpsize1x2x1_ffma_aligna4_"
      "alignc4_execute_kernel__5x_cublas"), "gemm", False),
    # with TF32 allowed: an sm_90 warpgroup (wgmma) kernel computing in tf32
    (("sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize128x128x32_warpgroupsize1x1x1_execute_"
      "segment_k_off_kernel__5x_cublas"), "gemm", True),
    (("sm90_xmma_fprop_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc_tilesize128x128x32_"
      "warpgroupsize1x1x1_g1_execute_segment_k_off_kernel__5x_cudnn"), "conv", True),
    # cuBLAS 12.8+ nvjet kernels (fp16 "hss", bf16 "tst"): Tensor Cores
    ("nvjet_sm90_hss_320x128_64x3_1x2_h_bz_coopB_NNT", "gemm", True),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_NNT", "gemm", True),
]


@pytest.mark.parametrize(("name", "category", "tensor_core"), HOPPER)
def test_hopper_gemm_names(name, category, tensor_core):
    assert classify(name) == (category, tensor_core)
