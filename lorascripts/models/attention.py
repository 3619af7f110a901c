"""Which attention kernel a diffusion transformer's training call runs: on a CPU in bf16, small attentions run as
plain matmuls instead of the fused kernel.

PyTorch's fused CPU attention (`_scaled_dot_product_flash_attention_for_cpu`) gains little from bf16: on the
tiny FLUX benchmark (heads of 128, 384 tokens) its forward + backward took 17 ms per call in bf16 against 20 ms
in fp32, a third of the whole step. The same attention as matmuls (torch's own "math" SDPA, softmax over a
materialised score matrix) runs its products on the bf16 matmul units and took about half that. Two settings,
both the libraries' own switches, make it so:

- diffusers' `attention_backend("_native_math")`: its attention dispatcher (every diffusers transformer that
  routes through `dispatch_attention_fn`, FLUX.1 among them) calls SDPA with only the math backend allowed;
- torch's `allow_fp16_bf16_reduction_math_sdp(True)`: without it the math path upcasts bf16 q/k/v to fp32 and
  is slower than the fused kernel. With it the products accumulate in fp32 inside the matmul and the softmax
  output is stored in bf16 (the precision of the matmul-based attention ComfyUI and older diffusers ran).

The score matrix is materialised and kept for the backward (batch x heads x tokens² bf16 values per call), so
this is chosen only while one call's scores stay under `MATH_SCORES_BYTES`; larger attentions keep the fused
kernel, which never holds them. On CUDA, or in fp32, nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

# One call's score matrix at most (bf16; the backward keeps about one such tensor per block, which the memory
# estimate does not count): the tiny FLUX benchmark's is 1.8 MB, so 57 blocks would keep < 0.5 GB more. FLUX.1
# itself at 256 px with 512 T5 tokens (768 tokens, 24 heads) has 27 MB and keeps the fused kernel: the gain was
# measured only on small attentions.
MATH_SCORES_BYTES = 8 * 2**20


def use_math_attention(
    device: torch.device, dtype: torch.dtype, batch: int, heads: int, tokens: int, checkpointed: bool = False
) -> bool:
    """Whether `dit_attention` switches this call to the math kernel (CPU, bf16, small score matrix, no gradient
    checkpointing: its recomputation runs in the backward, outside the switch, and must save what the forward
    saved, so a checkpointed model keeps the fused kernel in both)."""
    if checkpointed or device.type != "cpu" or dtype != torch.bfloat16:
        return False
    if not hasattr(torch.backends.cuda, "fp16_bf16_reduction_math_sdp_allowed"):
        return False  # older torch: the math path would upcast to fp32 and lose to the fused kernel
    return batch * heads * tokens * tokens * 2 <= MATH_SCORES_BYTES


@contextlib.contextmanager
def dit_attention(
    device: torch.device, dtype: torch.dtype, batch: int, heads: int, tokens: int, checkpointed: bool = False
) -> Iterator[None]:
    """Around one transformer forward: the math kernel with bf16 reductions where `use_math_attention` says so.

    The flag is read when SDPA runs its forward (the math path is composite: its backward is the recorded
    matmuls and softmax), so restoring it on exit leaves the backward and everything else unchanged.
    """
    if not use_math_attention(device, dtype, batch, heads, tokens, checkpointed):
        yield
        return
    try:
        from diffusers.models.attention_dispatch import attention_backend
    except ImportError:  # diffusers without the attention dispatcher: its processors call SDPA as they do
        yield
        return
    sdp = torch.backends.cuda
    before = sdp.fp16_bf16_reduction_math_sdp_allowed()
    sdp.allow_fp16_bf16_reduction_math_sdp(True)
    try:
        with attention_backend("_native_math"):
            yield
    finally:
        sdp.allow_fp16_bf16_reduction_math_sdp(before)
