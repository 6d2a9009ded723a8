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

CATEGORIES = ("gemm", "conv", "attention", "elementwise", "reduction", "norm", "memcpy",
              "memset", "communication", "sync", "other")

_COMM = re.compile(r"(^nccl)|(ncclKernel)|(ncclDevKernel)|(^rccl)|(^hccl)|(^ccl)|(^gloo)|"
                   r"(all_?reduce|all_?gather|reduce_?scatter|all_?to_?all)", re.IGNORECASE)

# The order matters: attention before gemm (flash kernels mention gemm tiles), conv before gemm
# (cuDNN implicit-GEMM convolutions), norm before elementwise and reduction, elementwise before
# reduction (a scatter with a ReduceAdd functor is still a scatter).
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("attention", re.compile(
        r"flash_?(fwd|bwd|attn)|fmha|_sdpa|sdpa_|attention|attn_fwd|attn_bwd|mha_(fwd|bwd)|"
        r"softmax_?(fwd|bwd)_.*(flash|fmha)", re.IGNORECASE)),
    ("conv", re.compile(
        r"conv(?!ert)|cudnn.*(fprop|dgrad|wgrad)|cudnn\w*::reduction|(fprop|dgrad|wgrad)_|xmma_(fprop|dgrad|wgrad)|"
        r"scudnn|h884cudnn|s884cudnn|1688cudnn|16816cudnn|winograd|wgrad_alg|dgrad_alg|"
        r"dgrad2d|dgrad_engine|im2col|col2im|computeOffsetsKernel|computeBOffsetsKernel|"
        r"computeWgrad\w*OffsetsKernel|fft\dd_(r2c|c2r)|fft1d_(r2c|c2r)|flip_filter|"
        r"pointwise_mult_and_sum_complex|gcgemm|_cgemm|implicit_gemm|ImplicitGemm|"
        r"first_layer_wgrad|direct_group|depthwise|conv2d_c1_k1", re.IGNORECASE)),
    ("norm", re.compile(
        r"layer_?norm|LayerNorm|GammaBetaBackward|RowwiseMoments|ComputeInternalGradients|"
        r"batch_?norm|bn_(fw|bw)|batchnorm|group_?norm|GroupNorm|rms_?norm|RMSNorm|"
        r"instance_?norm|welford", re.IGNORECASE)),
    ("gemm", re.compile(
        r"(?<!fb)gemm|gemv|Cijk_|cublasLt|cublas|nvjet|\bmatmul|_mm_|triton_tem_|splitKreduce|"
        r"epilogue::impl::globalKernel|\bdot_kernel|scal_kernel|transpose_readWrite", re.IGNORECASE)),
    ("elementwise", re.compile(
        r"elementwise|triton_poi_|multi_tensor_apply|CatArrayBatchedCopy|FillFunctor|fill_kernel|"
        r"copy_kernel|copy_device|dropout|index_put|indexSelect|index_select|scatter_gather|"
        r"gather_kernel|scatter_kernel|nchwToNhwc|nhwcToNchw|scalePackedTensor|where_kernel|"
        r"\bvectorized|unrolled", re.IGNORECASE)),
    ("reduction", re.compile(
        r"reduce_kernel|Reduce|reduction|softmax|log_softmax|\bcub::Device(Scan|Reduce|"
        r"SegmentedReduce)|_scan_|cunn_ClassNLLCriterion|nll_loss|cross_entropy|max_pool|"
        r"avg_pool|adaptive_(avg|average|max)_?pool|triton_red_|triton_per_|norm_kernel|"
        r"argmax|argmin|cumsum|topk|mean_kernel|sum_kernel", re.IGNORECASE)),
)

# Tensor Core kernels. Checked only for gemm, conv and attention kernels: an elementwise
# kernel can carry a dtype such as "tf32" in its name without doing matrix math.
_TC = re.compile(
    r"h884|s884|h1688|s1688|i8816|i16832|16816|hmma|imma|wmma|tensorop|xmma|gmma|nvjet|"
    r"tf32|bf16.*gemm|flash_?(fwd|bwd|attn)|_sdpa|sdpa_|MI\d+x\d+x\d+|xdl|"
    r"dgrad_1x1_stride_2x2|first_layer_wgrad_kernel|conv1x1|conv2d_c1_k1|direct_group",
    re.IGNORECASE)
_FMHA_HALF = re.compile(r"fmha.*(f16|bf16|half)", re.IGNORECASE)

_DEVICE_KINDS = {"memcpy": "memcpy", "memset": "memset", "sync": "sync"}


def classify(name: str, kind: str = "compute") -> tuple[str, bool | None]:
    """(category, tensor_core) of one device event.

    Args:
        name: the kernel name as the trace has it (mangled or demangled).
        kind: ``kernels.kind`` (compute, communication, memcpy, memset, sync).
    """
    if kind in _DEVICE_KINDS:
        return _DEVICE_KINDS[kind], False
    if kind == "communication" or _COMM.search(name):
        return "communication", False
    category = "other"
    for cat, pattern in _RULES:
        if pattern.search(name):
            category = cat
            break
    return category, _tensor_core(name, category)


def _tensor_core(name: str, category: str) -> bool | None:
    if category not in ("gemm", "conv", "attention"):
        return False
    low = name.lower()
    if "simt" in low or "ffma" in low:
        # CUDA-core FMA kernels, even inside the xmma framework (sm80_xmma_gemm_..._ffma)
        return False
    if _TC.search(name):
        # "tensorop" / "xmma" are authoritative even when the name also says sgemm/f32
        # (cutlass_80_tensorop_s1688gemm is TF32 on Tensor Cores).
        return True
    if "fmha" in low:
        return bool(_FMHA_HALF.search(name))
    if name.startswith("triton_tem_"):
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
