"""What a device kernel does, and whether it ran on Tensor Cores, from its name alone.

Every kernel gets a ``category`` (gemm, conv, attention, elementwise, reduction, norm,
memcpy, memset, communication, sync, other) and a ``tensor_core`` verdict: true, false, or
null when the name cannot tell (a Triton template, whose ``tl.dot`` uses Tensor Cores only for
some dtypes). Only the name is used, so the same answer comes out for a live run and for a trace
imported from a cluster; the names are those the vendor libraries give their kernels:

* Volta/Turing: cuBLAS/cuDNN ``h884``/``s884``/``h1688``/``s1688``/``i8816`` kernels, ``hmma``,
  CUTLASS ``wmma``/``tensorop``.
* Ampere: ``16816``/``s1688`` (TF32), cuDNN ``sm80_xmma_{fprop,dgrad,wgrad}_implicit_gemm``
  (TF32 when ``tf32`` is in the name), CUTLASS ``cutlass_80_tensorop``; ``simt`` CUTLASS
  kernels and ``ampere_sgemm``/``volta_sgemm`` are plain FP32.
* Hopper: ``sm90_xmma``, ``gmma``/``wgmma``, cuBLAS ``nvjet``, cuDNN ``sm90`` SDPA kernels.
* Attention: FlashAttention (``flash_fwd``/``flash_bwd``), cuDNN SDPA and xformers/PyTorch
  ``fmha_cutlass`` kernels (Tensor Cores for f16/bf16, SIMT for f32).
* AMD: Tensile/hipBLASLt ``Cijk_...`` GEMMs use the matrix cores when their name has a
  ``MI<m>x<n>x<k>`` (MFMA) tile; Composable Kernel ``xdl``/``wmma`` kernels too.

Categories are tested first to last; a name that matches nothing is ``other``. cuDNN's FFT
convolution kernels (``fft2d_r2c``, ``flip_filter``, complex ``cgemm``) count as ``conv``: in
training traces they come from convolutions, not from ``torch.fft``.
"""

from __future__ import annotations

import re

# Every rule is a set of lower-case substrings: ``in`` on a lower-cased name is C-speed, where a
# regex of many alternatives costs milliseconds on the multi-kilobyte templated names.
_COMM_PREFIXES = ("nccl", "rccl", "hccl", "ccl", "gloo")
_COMM_PARTS = ("nccl", "allreduce", "all_reduce", "allgather", "all_gather", "reducescatter",
               "reduce_scatter", "alltoall", "all_to_all")

# The order matters: attention before gemm (flash kernels mention gemm tiles), conv before gemm
# (cuDNN implicit-GEMM convolutions), norm before elementwise and reduction, elementwise before
# reduction (a scatter with a ReduceAdd functor is still a scatter).
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("flash_fwd", "flash_bwd", "flashattn", "flash_attn", "fmha", "_sdpa", "sdpa_",
                   "attention", "attn_fwd", "attn_bwd", "mha_fwd", "mha_bwd")),
    ("conv", ("conv", "fprop_", "dgrad_", "wgrad_", "scudnn", "884cudnn", "1688cudnn",
              "16816cudnn", "winograd", "wgrad_alg", "dgrad_alg", "dgrad2d", "dgrad_engine",
              "im2col", "col2im", "computeoffsetskernel", "computeboffsetskernel",
              "computewgrad", "fft1d_r2c", "fft1d_c2r", "fft2d_r2c", "fft2d_c2r", "fft3d_r2c",
              "fft3d_c2r", "flip_filter", "pointwise_mult_and_sum_complex", "gcgemm", "_cgemm",
              "implicit_gemm", "implicitgemm", "first_layer_wgrad", "direct_group",
              "depthwise")),
    ("norm", ("layer_norm", "layernorm", "gammabetabackward", "rowwisemoments",
              "computeinternalgradients", "batch_norm", "batchnorm", "bn_fw", "bn_bw",
              "group_norm", "groupnorm", "rms_norm", "rmsnorm", "instance_norm", "instancenorm",
              "welford")),
    ("gemm", ("gemm", "gemv", "cijk_", "cublas", "nvjet", "matmul", "_mm_", "triton_tem_",
              "splitkreduce", "epilogue::impl::globalkernel", "dot_kernel", "scal_kernel",
              "transpose_readwrite")),
    ("elementwise", ("elementwise", "triton_poi_", "multi_tensor_apply", "catarraybatchedcopy",
                     "fillfunctor", "fill_kernel", "copy_kernel", "copy_device", "dropout",
                     "index_put", "indexselect", "index_select", "scatter_gather",
                     "gather_kernel", "scatter_kernel", "nchwtonhwc", "nhwctonchw",
                     "scalepackedtensor", "where_kernel", "vectorized", "unrolled")),
    ("reduction", ("reduce", "reduction", "softmax", "cub::devicescan", "_scan_",
                   "classnllcriterion", "nll_loss", "cross_entropy", "max_pool", "avg_pool",
                   "adaptive_avg", "adaptive_average", "adaptive_max", "triton_red_",
                   "triton_per_", "norm_kernel", "argmax", "argmin", "cumsum", "topk",
                   "mean_kernel", "sum_kernel")),
)

# Tensor Core kernels. Checked only for gemm, conv and attention kernels: an elementwise
# kernel can carry a dtype such as "tf32" in its name without doing matrix math.
_TC_PARTS = ("h884", "s884", "h1688", "s1688", "i8816", "i16832", "16816", "hmma", "imma",
             "wmma", "tensorop", "xmma", "gmma", "nvjet", "tf32", "flash_fwd", "flash_bwd",
             "flashattn", "flash_attn", "_sdpa", "sdpa_", "xdl", "dgrad_1x1_stride_2x2",
             "first_layer_wgrad_kernel", "conv1x1", "conv2d_c1_k1", "direct_group")
_AMD_MFMA = re.compile(r"_mi\d+x\d+x\d+")  # Tensile tile with an MFMA instruction shape
_DEVICE_KINDS = {"memcpy": "memcpy", "memset": "memset", "sync": "sync"}


def classify(name: str, kind: str = "compute") -> tuple[str, bool | None]:
    """(category, tensor_core) of one device event.

    Args:
        name: the kernel name as the trace has it (mangled or demangled).
        kind: ``kernels.kind`` (compute, communication, memcpy, memset, sync).
    """
    if kind in _DEVICE_KINDS:
        return _DEVICE_KINDS[kind], False
    low = name.lower()
    if (kind == "communication" or low.startswith(_COMM_PREFIXES)
            or any(p in low for p in _COMM_PARTS)):
        return "communication", False
    # "conv" must not match "convert"; "gemm" must not match FBGEMM's embedding kernels
    key = low.replace("convert", "").replace("fbgemm", "")
    if "cudnn" in key and "::reduction" in key:
        category = "conv"  # split-K reduction of a cuDNN/CUTLASS convolution
    else:
        category = next((cat for cat, parts in _RULES if any(p in key for p in parts)), "other")
    return category, _tensor_core(key, category)


def _tensor_core(low: str, category: str) -> bool | None:
    if category not in ("gemm", "conv", "attention"):
        return False
    if "simt" in low or "ffma" in low:
        # CUDA-core FMA kernels, even inside the xmma framework (sm80_xmma_gemm_..._ffma)
        return False
    if any(p in low for p in _TC_PARTS) or ("bf16" in low and "gemm" in low):
        # "tensorop" / "xmma" are authoritative even when the name also says sgemm/f32
        # (cutlass_80_tensorop_s1688gemm is TF32 on Tensor Cores).
        return True
    if "cijk_" in low:
        return _AMD_MFMA.search(low) is not None
    if "fmha" in low:
        return any(p in low for p in ("f16", "bf16", "half"))
    if low.startswith("triton_tem_"):
        return None  # tl.dot: Tensor Cores for f16/bf16/tf32 inputs, not for fp32 ieee
    return False


def classify_names(names: list[str], kinds: list[str]) -> tuple[list[str], list[bool | None]]:
    """:func:`classify` over columns, computed once per distinct (name, kind)."""
    memo: dict[tuple[str, str], tuple[str, bool | None]] = {}
    cats: list[str] = []
    tcs: list[bool | None] = []
    for key in zip(names, kinds):
        got = memo.get(key)
        if got is None:
            got = memo[key] = classify(key[0], key[1])
        cats.append(got[0])
        tcs.append(got[1])
    return cats, tcs
