"""FluxPipeline for previews and grids, with the settings the loaded model says it was trained with.

FLUX.1-dev embeds a distilled guidance value and schnell needs none; a FLUX-architecture model trained with
caption dropout instead (the toy model; de-distilled fine-tunes) needs true classifier-free guidance: a second
pass on the negative (empty) prompt, FluxPipeline's own `true_cfg_scale`. Such a file says so in its
`lorascripts.arch` metadata (`{"guidance": "cfg"}`; family.py reads it).
"""

from __future__ import annotations

from typing import Any

from diffusers import FluxPipeline


class RunFluxPipeline(FluxPipeline):
    """FluxPipeline whose T5 length is the run's, and whose `guidance_scale` is the true CFG scale (empty negative
    prompt) for models trained without guidance distillation."""

    def __call__(self, *args: Any, guidance_scale: float = 3.5, **kwargs: Any) -> Any:
        kwargs.setdefault("max_sequence_length", self.t5_length)
        if self.true_cfg:
            kwargs.setdefault("negative_prompt", "")
            return super().__call__(*args, true_cfg_scale=guidance_scale, **kwargs)
        return super().__call__(*args, guidance_scale=guidance_scale, **kwargs)


def sampling_pipeline(base: Any, t5_length: int, true_cfg: bool) -> RunFluxPipeline:
    """FluxPipeline around the base model's (LoRA-hooked) parts."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipeline = RunFluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(base.noise_scheduler.config),
        vae=base.vae,
        text_encoder=base.text_encoders[0],
        tokenizer=base.tokenizers[0],
        text_encoder_2=base.text_encoders[1],
        tokenizer_2=base.tokenizers[1],
        transformer=base.denoiser,
    )
    pipeline.t5_length = t5_length
    pipeline.true_cfg = true_cfg
    return pipeline
