"""Performance helpers: FLOP counting, the measured matmul peak and the pre-flight run estimate.

Contract with bench/ (read by the bench helper; changes are noted here):
- flops.train_step_flops(unet_config, *, batch, height, width, text_len=77, text_encoder_configs=None,
  train_text_encoder=False, gradient_checkpointing=False) -> float. height/width are *pixels* (latents are
  /8). `flops.train_step_cost(...)` returns the details (U-Net forward FLOPs, saved activations, aten calls).
- configs.unet_config_for(path | "toy") -> dict; configs.model_shapes(path) also gives the text-encoder
  configs (`.text_encoders`, pass them as text_encoder_configs), the VAE config and parameter counts.
- peak.matmul_peak(dtype, device="cpu") -> FLOP/s (cached in peak.user_cache_dir()/matmul_peak.json).
- estimate.estimate_run(cfg, device=None) -> RunEstimate(peak_memory_bytes, seconds_per_step, flops_per_step,
  device, suggestion, ...).describe(). The trainer emits it as the `estimate` event (fields of
  RunEstimate.event()) and logs describe() before `loading_model`.
"""
