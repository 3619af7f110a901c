"""What the diffusion-transformer families (FLUX.1, Z-Image) share on the seam: flow matching from the run's
settings, a pipeline class for diffusers folders, and methods that only hand over to the family's own modules
(`layout`, `load`, `text`, `diffusers_lora`, `webui`, `estimate` of its package), so each family package holds its
behaviour and its class only what differs."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ...errors import ModelError
from .base import BaseModel, Family, LoadedParts
from .flow_matching import FlowSettings

logger = logging.getLogger(__name__)


def run_setting(base: BaseModel, key: str, default: Any) -> Any:
    """A training setting of the run (`base.extra["config"]`, the TrainConfig), or its default."""
    value = getattr(base.extra.get("config"), key, None)
    return default if value is None else value


class DiffusionTransformerFamily(Family):
    pipeline_class: str  # the diffusers pipeline of the family's folders (`model_index.json` `_class_name`)

    def _own(self, module: str) -> ModuleType:
        """A module of the family's own package (imported on first use, as the families' lazy imports do)."""
        return importlib.import_module(f"{type(self).__module__.rsplit('.', 1)[0]}.{module}")

    # --- files -----------------------------------------------------------------------------------------------------
    def claims_checkpoint(self, keys: set[str]) -> bool:
        return self._own("layout").transformer_prefix(keys) is not None

    def claims_diffusers(self, source: str, index: dict[str, Any], local_only: bool) -> bool:
        return index.get("_class_name") == self.pipeline_class

    def load_checkpoint(
        self,
        path: Path,
        state: dict[str, torch.Tensor],
        metadata: dict[str, str],
        *,
        tokenizer_path: str | None,
        dtype: torch.dtype,
        components: dict[str, str | None] | None = None,
    ) -> LoadedParts:
        load = self._own("load").load_single_file
        return load(self, path, state, metadata, components or {}, tokenizer_path, dtype)

    def load_diffusers(self, source: str, *, dtype: torch.dtype, local_only: bool) -> LoadedParts:
        return self._own("load").load_diffusers(source, dtype, local_only)

    def noise_scheduler(self, parts: LoadedParts, prediction_type: str) -> tuple[Any, str]:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if prediction_type not in ("auto", "flow"):
            raise ModelError(
                f"prediction_type {prediction_type} does not apply to {self.label} (a flow-matching model); "
                "use auto."
            )
        return FlowMatchEulerDiscreteScheduler.from_config(parts.scheduler_config or {}), "flow"

    # --- training --------------------------------------------------------------------------------------------------
    def flow_settings(self, base: BaseModel, min_snr_gamma: float | None) -> FlowSettings:
        """The run's flow-matching settings; what it left unset takes the family's defaults for this model."""
        if min_snr_gamma:
            logger.warning(
                "min_snr_gamma is for noise-prediction models; %s uses loss_weighting instead.", self.label
            )
        own = self.config_defaults(self.model_variant(base))  # what a run that left them unset resolved to
        return FlowSettings(
            timestep_sampling=run_setting(base, "timestep_sampling", own["timestep_sampling"]),
            discrete_flow_shift=run_setting(base, "discrete_flow_shift", own["discrete_flow_shift"]),
            sigmoid_scale=run_setting(base, "sigmoid_scale", 1.0),
            loss_weighting=run_setting(base, "loss_weighting", "none"),
            dynamic_shift=self.dynamic_shift,
        )

    def encode_tokens(
        self, base: BaseModel, ids: list[torch.Tensor], *, clip_skip: int
    ) -> dict[str, torch.Tensor]:
        return self._own("text").encode_tokens(base, ids)

    def bucket_unit(self, base: BaseModel) -> int:
        # the VAE factor x the transformer's 2x2 patches: 16 px for the 8x VAE both families use
        return 2 ** (len(base.vae.config.block_out_channels) - 1) * 2

    # --- LoRA files ------------------------------------------------------------------------------------------------
    def lora_file_tensors(self, base: BaseModel, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        layout = self._own("lora_layout")  # fused layers (FLUX's linear1, Z-Image's qkv) as one kohya module
        return layout.to_file(tensors, layout.fused_rows(base.denoiser))

    def lora_network_tensors(
        self, base: BaseModel, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        layout = self._own("lora_layout")
        return layout.from_file(tensors, layout.fused_rows(base.denoiser))

    def diffusers_lora_names(
        self, name: str, down: torch.Tensor, up: torch.Tensor
    ) -> list[tuple[str, torch.Tensor]] | None:
        return self._own("diffusers_lora").diffusers_names(name, down, up) or []

    def kohya_from_diffusers(
        self, modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]] | None:
        return self._own("diffusers_lora").kohya_modules(modules)

    # --- hosts and tools -------------------------------------------------------------------------------------------
    def webui_layers(self, base: Any) -> dict[str, tuple[int, ...]]:
        return self._own("webui").model_layers(base)

    def reference_model(self) -> Any:
        return self._own("webui").reference_base(self)

    def checkpoint_layers(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
        return self._own("webui").checkpoint_layers(shapes)

    # --- the estimate's model (perf/) ------------------------------------------------------------------------------
    def shapes_from_checkpoint(self, header: Any, components: dict[str, str | None]) -> Any:
        return self._own("estimate").checkpoint_shapes(self, header, components)

    def shapes_from_folder(self, path: Path) -> Any:
        return self._own("estimate").folder_shapes(self, path)

    def meta_denoiser_inputs(
        self,
        config: dict[str, Any],
        batch: int,
        latent_hw: tuple[int, int],
        text_len: int,
        dtype: torch.dtype,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return self._own("estimate").transformer_inputs(config, batch, latent_hw, text_len, dtype)

    def meta_text_encoder(
        self, config: dict[str, Any], batch: int, text_len: int
    ) -> tuple[torch.nn.Module, torch.Tensor]:
        return self._own("estimate").meta_text_encoder(config, batch, text_len)
