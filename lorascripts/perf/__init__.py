"""Performance helpers: FLOP counting, the measured matmul peak and the pre-flight run estimate.

Contract with bench/ (read by the bench helper; changes are noted here):
- flops.train_step_flops(unet_config, *, batch, height, width, text_len=77, text_encoder_configs=None,
  train_text_encoder=False, gradient_checkpointing=False) -> float. height/width are *pixels* (latents are
  /8). It forwards its keywords to `flops.train_step_cost(...)`, which also takes rank, roles, conv_lora,
  run_text_encoder, dtype and returns the details (U-Net forward FLOPs, saved activations, aten calls).
  Attention is counted with torch's own SDPA formulas, backward as the fused kernels run it (scores
  recomputed: 2.5x the forward attention FLOPs), not as the math path would (2x).
- configs.unet_config_for(path | "toy") -> dict; configs.model_shapes(path, components=None) also gives the
  text-encoder configs (`.text_encoders`, pass them as text_encoder_configs), the VAE config and parameter counts;
  for a transformer-only file they come from the part files the loader would read (`components`: the config's
  `vae` / `text_encoder` / `text_encoder_2`; None: found beside it), `.assumed` names the parts not found.
- peak.matmul_peak(dtype, device="cpu") -> FLOP/s (cached in peak.user_cache_dir()/matmul_peak.json, per CPU
  model, dtype and torch thread count; `refresh=True` measures again).
- estimate.estimate_run(cfg, device=None, memory_limit_bytes=None) -> RunEstimate(peak_memory_bytes,
  seconds_per_step, flops_per_step, device, suggestion, memory_limit_bytes, training_memory_bytes,
  loading_memory_bytes, encoding_memory_bytes, matmul_peak_flops, resolution, precision, overhead_bound,
  assumed).describe(). The trainer
  computes it before the Accelerator exists (it decides `mixed_precision: auto` and `cpu_threads: 0`), logs
  describe() and emits the `estimate` event (RunEstimate.event()) before `loading_model`.
"""
