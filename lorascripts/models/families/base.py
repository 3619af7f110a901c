"""The family seam: what the engine asks of a model family (SD1.x, SD2.x, SDXL; FLUX.1, Z-Image).

Everything that differs between model generations lives behind `Family`: recognising its files, loading the
denoiser / VAE / text encoders / tokenizers, turning captions into conditioning, the training objective (noise or
flow target, timestep sampling, loss weights), latent scale and shift, the bucket unit, LoRA targets and their
kohya names, the metadata of the files we write, preview sampling, the WebUI/ComfyUI key rules of the self-test
and the memory/FLOP model of the estimate. The trainer, caches, saving, toolbox and hosts only call these
methods; no module outside `models/families/` asks which family it has. docs/ARCHITECTURE.md shows how to add one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from ...network.targets import Target
    from ...perf.configs import Header, ModelShapes


@dataclass
class StepNoise:
    """Random draws of one step, made on the CPU from a per-step seed so that resume reproduces them.

    `timesteps` are what the objective understands: integer DDPM steps, or flow-matching sigmas in [0, 1].
    """

    noise: torch.Tensor
    timesteps: torch.Tensor


class Objective(Protocol):
    """The training objective of a family: how a clean latent becomes an input and what the model must predict."""

    def draw(self, shape: tuple[int, ...], seed: int, noise_offset: float) -> StepNoise:
        """Noise and timesteps of one step (CPU, deterministic in `seed`)."""

    def noisy_input(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(model input, target) for these latents, noise and timesteps."""

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """Per-sample loss weights (min-SNR or its flow analogue), or None for a plain mean."""

    def model_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The timestep values the denoiser takes for these draws."""

    def validation_timesteps(self, count: int) -> torch.Tensor:
        """`count` fixed timesteps spread over the schedule (the validation loss is measured at each)."""


@dataclass
class BaseModel:
    """The frozen parts of a base model, typed by the family object that knows how to use them."""

    family: Family
    denoiser: Any  # the U-Net or diffusion transformer
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    noise_scheduler: Any
    prediction_type: str
    source: str
    name: str
    resolution: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedParts:
    """What a family's loader read from the files, before the engine picks the objective and resolution."""

    denoiser: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class Family(ABC):
    """One model family's behaviour. Instances are stateless singletons registered in `families/__init__.py`."""

    name: str  # "sd1": config value, registry key, what messages and events print
    label: str  # "SD1.x": how people write it
    kind_label: str  # "Stable Diffusion 1.x/2.x/XL": the generation, in "not a ... checkpoint" messages
    webui_version: str  # the `sd version` of an AUTOMATIC1111 card sidecar
    default_resolution: int
    caption_token_window: int  # caption tokens the text encoder reads (dataset checks warn past it)
    text_components: tuple[str, ...]  # kohya component of each text encoder: ("te",) or ("te1", "te2")
    webui_needs_version = False  # the WebUI lists this family's LoRAs as SD1 without ss_base_model_version
    webui_hosts = "AUTOMATIC1111/Forge"  # the WebUIs that run this family (self-test and card wording)
    # parts kept in files of their own beside the denoiser, by config key (`vae`, `text_encoder`,
    # `text_encoder_2`) -> what that file is for this family, e.g. {"text_encoder": "CLIP-L (clip_l.safetensors)"};
    # hosts offer one file choice per entry, the loader refuses a key the family does not take
    components: dict[str, str] = {}
    # `output_format` values a run can write: "diffusers" (PEFT keys) where the family's loaders (diffusers,
    # Forge and ComfyUI key maps) read those as well as kohya's; the SD families write kohya only
    lora_output_formats: tuple[str, ...] = ("kohya",)
    # (module, class names) the family loads its models with: `python -m lorascripts doctor` imports them
    required_imports: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # the denoiser's block lists (attribute names, in the order they run) and how many blocks of each make one
    # `blocks_to_swap` unit; `fp8_base` stores the Linear weights inside them. None (SD's U-Nets): both refused
    swap_blocks: tuple[tuple[str, int], ...] = ()
    # whether the family's LoRA files can hold text-encoder modules (Z-Image: no loader reads a Qwen3 LoRA); a
    # family without them caches its text encoders' outputs and releases them by default (`config_defaults`)
    text_lora = True

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    # --- files -----------------------------------------------------------------------------------------------------
    @abstractmethod
    def claims_checkpoint(self, keys: set[str]) -> bool:
        """Whether a single-file checkpoint with these keys is of this family."""

    @abstractmethod
    def claims_diffusers(self, source: str, index: dict[str, Any], local_only: bool) -> bool:
        """Whether a diffusers folder / cached repo with this model_index.json is of this family."""

    @abstractmethod
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
        """The model in a single-file checkpoint this family claimed (ModelError naming what is wrong).

        `components`: files of parts kept apart from the denoiser, by the keys of `self.components`; None = find them.
        """

    @abstractmethod
    def load_diffusers(self, source: str, *, dtype: torch.dtype, local_only: bool) -> LoadedParts:
        """The model in a diffusers folder / cached repo this family claimed."""

    @abstractmethod
    def noise_scheduler(self, parts: LoadedParts, prediction_type: str) -> tuple[Any, str]:
        """(the training noise scheduler, the resolved prediction type) for these parts."""

    @abstractmethod
    def native_resolution(self, denoiser_config: Any, vae_config: Any) -> int:
        """The side length in pixels the model was trained at, from its configs."""

    # --- training --------------------------------------------------------------------------------------------------
    @abstractmethod
    def objective(self, base: BaseModel, *, min_snr_gamma: float | None) -> Objective:
        """The training objective for this base model."""

    @abstractmethod
    def tokenize(self, base: BaseModel, captions: list[str]) -> list[torch.Tensor]:
        """Token ids per tokenizer."""

    @abstractmethod
    def encode_tokens(
        self, base: BaseModel, ids: list[torch.Tensor], *, clip_skip: int
    ) -> dict[str, torch.Tensor]:
        """Text conditioning, batched; every value has the batch first so that it can be cached per caption."""

    def image_conditioning(
        self, base: BaseModel, prepared: list[Any], latent_shape: tuple[int, ...]
    ) -> dict[str, torch.Tensor]:
        """Conditioning from the image itself (SDXL: original size, crop, target size); none by default."""
        return {}

    @abstractmethod
    def predict(
        self,
        base: BaseModel,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The denoiser's prediction for a batch (latent layout in, latent layout out)."""

    def clip_skip_limit(self, base: BaseModel) -> int:
        """The largest `clip_skip` this model allows (1: its conditioning has no choice of layer)."""
        return 1

    def latent_scale_shift(self, vae: Any) -> tuple[float, float]:
        """(scale, shift): training latents are (encoded - shift) * scale."""
        config = vae.config
        return float(config.scaling_factor), float(getattr(config, "shift_factor", None) or 0.0)

    @abstractmethod
    def bucket_unit(self, base: BaseModel) -> int:
        """Image sides must be multiples of this (VAE factor x the denoiser's own downsampling / patch size)."""

    def enable_gradient_checkpointing(self, base: BaseModel, text_encoders: bool) -> None:
        base.denoiser.enable_gradient_checkpointing()
        if text_encoders:
            for te in base.text_encoders:
                te.gradient_checkpointing_enable()

    # --- LoRA files ------------------------------------------------------------------------------------------------
    @abstractmethod
    def lora_targets(self, base: BaseModel, roles: set[str], *, with_conv: bool, text: bool) -> list[Target]:
        """Every layer that gets a LoRA for these roles (denoiser first, then text encoders)."""

    @abstractmethod
    def kohya_name(self, base: BaseModel) -> Any:
        """A callable (component, module path) -> kohya base name for this model."""

    def lora_file_tensors(self, base: BaseModel, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The network's kohya tensors as the LoRA file holds them (FLUX fuses the parts of a fused layer)."""
        return tensors

    def lora_network_tensors(
        self, base: BaseModel, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """A LoRA file's tensors as the network holds them (the inverse of `lora_file_tensors`)."""
        return tensors

    def companion_shapes(
        self, checkpoint: Path, shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, tuple[int, ...]]:
        """Tensor shapes of the parts a checkpoint of this family keeps in other files, keyed as in the family's
        all-in-one layout (FLUX: CLIP-L beside a transformer-only file); default none."""
        return {}

    def kohya_from_diffusers(
        self, modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]] | None:
        """kohya modules {name: (down, up)} and the unmapped keys, from diffusers' PEFT modules {key: (lora_A,
        scaled lora_B)}, where the family names them itself (the inverse of `diffusers_lora_names`). Default None:
        the toolbox maps them through the reference model's paths."""
        return None

    def sample_defaults(self, variant: str = "") -> dict[str, float]:
        """Preview-sampling settings (`guidance_scale`, `steps`) this family's model of this `variant` expects
        when the run does not set them (the variant of a loaded model: `model_variant(base)`)."""
        return {"guidance_scale": 7.0, "steps": 20}

    def variant(self, name: str, metadata: dict[str, str], chosen: str = "auto") -> str:
        """Which model of the family a file / folder / repo `name` with this metadata is ("" when the family's
        models need no telling apart; Z-Image: turbo, base or unknown); `chosen`: the config's model_variant."""
        return ""

    def model_variant(self, base: BaseModel) -> str:
        """`variant` of a loaded model, honouring the run's `model_variant`."""
        chosen = getattr(base.extra.get("config"), "model_variant", None) or "auto"
        return self.variant(base.name, base.extra.get("metadata", {}), chosen)

    def config_defaults(self, variant: str) -> dict[str, Any]:
        """Values of run settings (config keys) that this family's model of this `variant` trains with when the
        config leaves them unset; the keys it does not name take the config's generic defaults
        (`models/run_defaults.py`). A family without text-encoder LoRAs caches the encoders' outputs."""
        return {} if self.text_lora else {"train_text_encoder": False, "cache_text_encoder_outputs": "memory"}

    def diffusers_lora_names(
        self, name: str, down: torch.Tensor, up: torch.Tensor
    ) -> list[tuple[str, torch.Tensor]] | None:
        """diffusers' PEFT module keys of one kohya module, each with its lora_B (the rows of `up` it gets; the
        down is shared), where the family names them itself ([]: no such layer). Default None: the toolbox
        names them from the reference model's paths (`unet.…`, `text_encoder.…`)."""
        return None

    def model_metadata(self, base: BaseModel) -> dict[str, str]:
        """Metadata that depends on the loaded model, not only the family (FLUX: dev or schnell)."""
        return {}

    @abstractmethod
    def lora_metadata(self, *, v_prediction: bool, resolution: int) -> dict[str, str]:
        """The family's kohya/modelspec fields: ss_base_model_version, ss_v2, modelspec.architecture, ..."""

    @abstractmethod
    def made_for(self, base_model_version: str) -> bool:
        """Whether a LoRA whose `ss_base_model_version` is this was trained on this family."""

    # --- hosts and tools -------------------------------------------------------------------------------------------
    @abstractmethod
    def sampling_pipeline(self, base: BaseModel) -> Any:
        """A diffusers text-to-image pipeline around the (LoRA-hooked) parts, for preview samples."""

    @abstractmethod
    def webui_layers(self, base: Any) -> dict[str, tuple[int, ...]]:
        """Layer name as the WebUI / ComfyUI name it -> weight shape, for the key self-test."""

    @abstractmethod
    def resolve_webui_layer(
        self, lora_name: str, layers: dict[str, tuple[int, ...]]
    ) -> tuple[str | None, str]:
        """(the model layer a kohya LoRA name patches in the WebUI, or None; the role)."""

    @abstractmethod
    def reference_model(self) -> Any:
        """The family's standard model on the meta device (for the self-test and conversions without a file)."""

    @abstractmethod
    def checkpoint_layers(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
        """WebUI layer name -> (single-file key, weight shape) of a checkpoint of this family."""

    # --- the estimate's model (perf/) ------------------------------------------------------------------------------
    @abstractmethod
    def shapes_from_checkpoint(self, header: Header, components: dict[str, str | None]) -> ModelShapes:
        """The estimate's view of a single-file checkpoint of this family, from its header only, and of the part
        files the load will read with it (`components`: the config's files of `self.components`; None = find)."""

    @abstractmethod
    def shapes_from_folder(self, path: Path) -> ModelShapes:
        """The estimate's view of a diffusers folder of this family, from its JSON configs and headers."""

    @abstractmethod
    def meta_denoiser(self, config: dict[str, Any]) -> torch.nn.Module:
        """The denoiser built from its config on the meta device (FLOPs and saved activations are counted on it)."""

    @abstractmethod
    def meta_denoiser_inputs(
        self,
        config: dict[str, Any],
        batch: int,
        latent_hw: tuple[int, int],
        text_len: int,
        dtype: torch.dtype,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) of one denoiser call on meta tensors; the latent input requires grad."""

    @abstractmethod
    def meta_text_encoder(
        self, config: dict[str, Any], batch: int, text_len: int
    ) -> tuple[torch.nn.Module, torch.Tensor]:
        """A text encoder built from its config on the meta device, and token ids for one batch."""
