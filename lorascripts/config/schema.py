"""The training config: one typed, versioned object that YAML files, ComfyUI widgets and the WebUI form fill.

The keys image and text training share are declared in base.py; every image key is declared once here with its help text, allowed values and aliases; the validator, the `--set`
parser and the README's config reference are all derived from these declarations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..models.families import family_names
from .base import MAX_SEED, MODEL, NETWORK, SAMPLE, SAVE, TRAIN, RunConfig
from .fields import option
from .rules import DEFAULT_TARGET_MODULES, check_consistency

NETWORK_TYPES = ("lora", "locon", "loha", "lokr")
# the strength the WebUI card suggests (`<lora:name:0.7>`); the forms read it from here
PREFERRED_WEIGHT = 0.7
# image sides beyond 16384 px exceed what a VAE or PIL handles in memory
MAX_SIDE = 16_384
# config keys of part files a family keeps beside its denoiser (`Family.components` says which it takes)
COMPONENT_KEYS = ("vae", "text_encoder", "text_encoder_2")

DATA = "Dataset and captions"
JUDGE = "Validation and EMA"


@dataclass(kw_only=True)  # the shared keys come first: every key is passed by name
class TrainConfig(RunConfig):
    """Everything one image-LoRA training run needs (the keys of `RunConfig` and the image ones below). See the
    README's config reference for each key."""

    # --- base model -------------------------------------------------------------------------------------
    train_data_dir: str = option(
        help="Folder of training images (metadata.csv, .txt/.caption sidecars and N_name repeat folders work).",
        section=DATA,
        path=True,
        aliases=("data_dir", "dataset_dir"),
    )
    model_family: str = option(
        "auto",
        help="Expected family of the base model; `auto` detects it from the weights and reports it.",
        section=MODEL,
        choices=("auto", *family_names()),
    )
    model_variant: str = option(
        "auto",
        help="Z-Image: turbo (step-distilled) or base; `auto` reads it from the file / folder name and metadata. "
        "Recorded in the LoRA's metadata (ls_zimage_variant); Turbo runs get a warning (README: Z-Image).",
        section=MODEL,
        choices=("auto", "turbo", "base"),
    )
    prediction_type: str = option(
        "auto",
        help="epsilon or v_prediction; `auto` picks v_prediction only for SD2 768-v models and logs the choice.",
        section=MODEL,
        choices=("auto", "epsilon", "v_prediction"),
        aliases=("v_parameterization",),
    )
    tokenizer_path: str | None = option(
        None,
        help="Folder with the tokenizer files (CLIP; Qwen3 for Z-Image), if they cannot be found automatically.",
        section=MODEL,
        path=True,
    )
    tokenizer_roots: list[str] = option(
        help="Folders where a host keeps the tokenizers it ships (ComfyUI: its `comfy` folder; Forge: "
        "`backend/huggingface`); each model family looks for its tokenizers at their known places under them, "
        "after `tokenizer_path` and the model's own folder, before the Hugging Face cache. The ComfyUI node and "
        "the WebUI tab add their own.",
        section=MODEL,
        path=True,
        default_factory=list,
    )
    allow_pickle: bool = option(
        False,
        help="Allow .ckpt/.pt pickle checkpoints (loaded with weights_only=True). Prefer .safetensors.",
        section=MODEL,
    )
    clip_skip: int = option(
        1, help="Use the output of the N-th text-encoder layer from the end.", section=MODEL, min=1, max=12
    )

    # --- dataset and captions ------------------------------------------------------------------------------
    metadata_path: str | None = option(
        None,
        help="metadata.csv (file_name,caption); defaults to <train_data_dir>/metadata.csv.",
        section=DATA,
        path=True,
    )
    caption_extensions: list[str] = option(
        help="Sidecar caption extensions read when metadata.csv has no row for an image.",
        section=DATA,
        default_factory=lambda: [".txt", ".caption"],
        aliases=("caption_extension",),
    )
    missing_captions: str = option(
        "error",
        help="What to do with images without a caption: error, or use the trigger word / folder name / empty.",
        section=DATA,
        choices=("error", "trigger", "folder_name", "empty"),
    )
    bad_images: str = option(
        "error",
        help="Unreadable images: stop with an error naming them, or skip them with a warning.",
        section=DATA,
        choices=("error", "skip"),
    )
    dataset_checks: str = option(
        "error",
        help="Pre-flight dataset checks (report in <output_dir>/dataset_report.html): `error` refuses a dataset "
        "with errors and logs warnings, `warn` only logs, `off` skips.",
        section=DATA,
        choices=("error", "warn", "off"),
    )
    background_color: list[int] = option(
        help="RGB colour transparent images are composited on.",
        section=DATA,
        default_factory=lambda: [255, 255, 255],
    )
    trigger_word: str = option(
        "",
        help="Prepended to every caption (once) and written to the WebUI card as activation text.",
        section=DATA,
        aliases=("trigger", "instance_prompt"),
    )
    shuffle_caption: bool = option(False, help="Shuffle comma-separated tags each time.", section=DATA)
    keep_tokens: int = option(
        0, help="Tags kept in place at the start when shuffling (trigger word counts).", section=DATA, min=0
    )
    caption_dropout_rate: float = option(
        0.0, help="Probability of training an image with an empty caption.", section=DATA, min=0.0, max=1.0
    )
    caption_tag_dropout_rate: float = option(
        0.0, help="Probability of dropping each tag.", section=DATA, min=0.0, max=1.0
    )
    resolution: list[int] = option(
        help="Training resolution: one number (square area) or [width, height]. Defaults to the family's.",
        section=DATA,
        max=MAX_SIDE,
        default_factory=list,
    )
    enable_bucket: bool = option(True, help="Aspect-ratio bucketing (no needless cropping).", section=DATA)
    min_bucket_reso: int = option(
        256, help="Smallest bucket side in pixels.", section=DATA, min=8, max=MAX_SIDE
    )
    max_bucket_reso: int = option(
        2048, help="Largest bucket side in pixels.", section=DATA, min=8, max=MAX_SIDE
    )
    bucket_reso_steps: int = option(
        64, help="Bucket sides are multiples of this.", section=DATA, min=8, max=1024
    )
    bucket_no_upscale: bool = option(
        False, help="Never upscale small images to reach a bucket.", section=DATA
    )
    flip_aug: bool = option(False, help="Random horizontal flips (disables latent caching).", section=DATA)

    # --- network -----------------------------------------------------------------------------------------------
    network_type: str = option(
        "lora",
        help="lora (attention/MLP only), locon (also 3x3 convs), loha or lokr (LyCORIS).",
        section=NETWORK,
        choices=NETWORK_TYPES,
        aliases=("algo", "network_module"),
    )
    conv_rank: int | None = option(
        None,
        help="Rank of 3x3 conv layers (locon, loha, lokr). Defaults to lora_rank for locon.",
        section=NETWORK,
        min=1,
        max=1024,
        aliases=("conv_dim",),
    )
    conv_alpha: float | None = option(
        None, help="Alpha of conv layers (defaults to 1 like kohya).", section=NETWORK, min=0.0
    )
    target_modules: list[str] = option(
        help="Which layers get LoRA: the kohya default set, or a subset such as [q_proj, v_proj] (matched in the "
        "U-Net's attention as to_q/to_v and in the text encoder). Names: q_proj k_proj v_proj out_proj fc1 fc2 "
        "ff proj_in proj_out.",
        section=NETWORK,
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
    )
    rank_dropout: float = option(0.0, help="Dropout of whole ranks.", section=NETWORK, min=0.0, max=1.0)
    module_dropout: float = option(
        0.0, help="Probability of skipping a whole LoRA module for a step.", section=NETWORK, min=0.0, max=1.0
    )
    train_text_encoder: bool | None = option(
        None,
        help="Also train LoRA on the text encoder(s). Empty: the family's (SD, FLUX.1: true unless "
        "cache_text_encoder_outputs is on; Z-Image: false, its LoRAs hold no text-encoder modules, so true is an "
        "error there).",
        section=NETWORK,
    )
    initial_lora: str | None = option(
        None,
        help="Continue training from an existing LoRA file (incremental training).",
        section=NETWORK,
        path=True,
        aliases=("network_weights",),
    )
    base_weights: list[str] = option(
        help="LoRA files merged into the frozen base model before training (kohya or diffusers/ai-toolkit keys), "
        "e.g. the Z-Image Turbo de-distillation adapter; they are not saved into the output LoRA, its metadata "
        "names them (ls_base_weights). Merged again on resume.",
        section=NETWORK,
        path=True,
        default_factory=list,
    )
    base_weights_multiplier: list[float] = option(
        help="Strength of each base_weights file, in the same order (empty: 1.0 each).",
        section=NETWORK,
        default_factory=list,
    )

    # --- training ------------------------------------------------------------------------------------------------
    unet_lr: float | None = option(None, help="Learning rate of the U-Net LoRA.", section=TRAIN, min=0.0)
    text_encoder_lr: float | None = option(
        None, help="Learning rate of the text-encoder LoRA.", section=TRAIN, min=0.0
    )
    noise_offset: float = option(
        0.0, help="Noise offset (helps very dark/bright images).", section=TRAIN, min=0.0, max=1.0
    )
    min_snr_gamma: float | None = option(
        None, help="Min-SNR loss weighting gamma (5 is typical).", section=TRAIN, min=0.0
    )
    cache_latents: str = option(
        "memory",
        help="Cache VAE latents: memory, disk or off.",
        section=TRAIN,
        choices=("off", "memory", "disk"),
    )
    cache_text_encoder_outputs: str | None = option(
        None,
        help="Cache text-encoder outputs (only when the text encoder is not trained): memory, disk or off. Empty: "
        "the family's (SD, FLUX.1: off; Z-Image: memory, the Qwen3 encoder leaves memory before the first step).",
        section=TRAIN,
        choices=("off", "memory", "disk"),
    )
    cache_dir: str | None = option(
        None, help="Folder of disk caches (default: <output_dir>/cache).", section=TRAIN, path=True
    )
    torch_compile: bool = option(False, help="Compile the U-Net with torch.compile.", section=TRAIN)
    fp8_base: bool | None = option(
        None,
        help="Diffusion transformers (FLUX.1): store the frozen blocks' Linear weights in float8_e4m3fn, "
        "computed in bf16 (half the memory of bf16; an fp8 file stays fp8). The LoRA stays in the training "
        "dtype. Empty: the memory_preset's (off: false).",
        section=TRAIN,
    )
    blocks_to_swap: int | None = option(
        None,
        help="Diffusion transformers (FLUX.1): keep this many transformer blocks in CPU memory, each brought to "
        "the GPU only while it computes (kohya's units: FLUX.1 16 = 8 double + 16 single blocks); needs "
        "gradient_checkpointing. Empty: the memory_preset's (off: 0).",
        section=TRAIN,
        min=0,
        max=1000,
    )
    memory_preset: str = option(
        "off",
        help="Diffusion transformers (FLUX.1): a published memory recipe for the card, 24gb (fp8_base), 16gb "
        "(+ blocks_to_swap 8), 12gb (16 + adamw8bit), 10gb (22), 8gb (28), each with gradient checkpointing, a "
        "frozen cached text encoder; fp8_base / blocks_to_swap you set win. auto: the first the pre-flight "
        "estimate fits in this GPU's memory (none when the config fits as it is).",
        section=TRAIN,
        choices=("off", "auto", "24gb", "16gb", "12gb", "10gb", "8gb"),
    )
    offload_encoders: str = option(
        "auto",
        help="auto: on a GPU, move the frozen VAE and text encoders to the CPU once latents and text-encoder "
        "outputs are cached (captions without shuffle/dropout), before the denoiser comes to the GPU; they come "
        "back for samples. on: also on CPU (frees nothing there). off: keep them on the device.",
        section=TRAIN,
        choices=("auto", "on", "off"),
    )
    channels_last: str = option(
        "auto",
        help="Channels-last memory layout for the U-Net and VAE convolutions. auto: on for bf16 on CPU "
        "(oneDNN's native layout: VAE encode for the latent cache 1.6x faster, U-Net forward ~10%; the "
        "training step itself unchanged within noise), off elsewhere (not measured there).",
        section=TRAIN,
        choices=("auto", "on", "off"),
    )
    cpu_threads: int = option(
        0,
        help="torch CPU threads. 0: auto (all cores; one for tiny models, whose steps are per-operator overhead, "
        "and on a machine whose load average is already twice its cores).",
        section=TRAIN,
        min=0,
        max=1024,
    )
    num_workers: int = option(0, help="Data-loading worker processes.", section=TRAIN, min=0, max=64)

    # --- saving ---------------------------------------------------------------------------------------------------
    output_name: str = option(
        "", help="File stem of the LoRA (defaults to the dataset folder name).", section=SAVE
    )
    save_every_n_epochs: int | None = option(None, help="Save every N epochs.", section=SAVE, min=1)
    save_precision: str = option(
        "fp16", help="dtype of the saved LoRA.", section=SAVE, choices=("fp16", "bf16", "fp32")
    )
    output_format: str = option(
        "kohya",
        help="Key format of the saved LoRA: kohya (every WebUI, ComfyUI, diffusers) or diffusers (diffusers/PEFT "
        "`transformer.…lora_A/lora_B` keys, alpha folded in, as diffusers and ai-toolkit write them; FLUX.1).",
        section=SAVE,
        choices=("kohya", "diffusers"),
    )
    preferred_weight: float = option(
        PREFERRED_WEIGHT,
        help="Preferred weight written to the WebUI card sidecar.",
        section=SAVE,
        min=0.0,
        max=4.0,
    )
    metadata_title: str = option("", help="modelspec title (defaults to output_name).", section=SAVE)
    metadata_author: str = option("", help="modelspec author.", section=SAVE)
    metadata_description: str = option("", help="Description for the WebUI card and modelspec.", section=SAVE)

    # --- samples and logging ----------------------------------------------------------------------------------
    sample_prompts: list[str] = option(
        help="Prompts rendered during training with fixed seeds.", section=SAMPLE, default_factory=list
    )
    sample_every_n_steps: int | None = option(
        None, help="Render samples every N steps.", section=SAMPLE, min=1
    )
    sample_steps: int | None = option(
        None,
        help="Denoising steps for samples. Empty: the model's (20; Z-Image Turbo 8, Z-Image Base 28).",
        section=SAMPLE,
        min=1,
        max=200,
    )
    sample_guidance_scale: float | None = option(
        None,
        help="Guidance for samples: SD's CFG scale, FLUX.1-dev's distilled guidance. Unset: the model family's "
        "(SD 7.0, FLUX.1 3.5).",
        section=SAMPLE,
        min=0.0,
    )
    sample_seed: int = option(
        1234,
        help="Seed of the first sample prompt (the next ones add 1).",
        section=SAMPLE,
        min=0,
        max=MAX_SEED,
    )

    # --- validation loss, best LoRA, early stop, EMA ---------------------------------------------------------------
    validation_split: float = option(
        0.0,
        help="Images held out of training for the validation loss: a fraction (< 1) or a count (>= 1), chosen "
        "with `seed`. 0: none (unless validation_dir is set).",
        section=JUDGE,
        min=0.0,
        max=100_000,
    )
    validation_dir: str | None = option(
        None,
        help="A folder of its own validation images + captions (read like train_data_dir); used instead of "
        "validation_split.",
        section=JUDGE,
        path=True,
    )
    validate_every_n_steps: int = option(
        100,
        help="Validation loss every N steps and at the end (same timesteps and noise every time).",
        section=JUDGE,
        min=1,
    )
    validation_timesteps: int = option(
        4,
        help="Fixed timesteps per validation image, evenly spread over the schedule (kohya-style).",
        section=JUDGE,
        min=1,
        max=50,
    )
    keep_best: bool = option(
        True,
        help="With validation: write <output_name>-best.safetensors whenever the validation loss improves.",
        section=JUDGE,
    )
    ema_decay: float | None = option(
        None,
        help="EMA of the LoRA weights (e.g. 0.999); empty: off. Also written as `ema: {decay: ...}`.",
        section=JUDGE,
        min=0.0,
        max=1.0,
    )
    ema_start_step: int = option(
        0, help="EMA follows the weights exactly until this step, then averages.", section=JUDGE, min=0
    )
    ema_update_every: int = option(1, help="Update the EMA every N optimizer steps.", section=JUDGE, min=1)
    ema_device: str = option(
        "device",
        help="Where the fp32 EMA copy lives: device (training device) or cpu (saves VRAM, slower updates).",
        section=JUDGE,
        choices=("device", "cpu"),
    )
    ema_save: str = option(
        "ema_only",
        help="ema_only: the LoRA files hold the EMA weights; both: also <name>-ema.safetensors beside the raw ones.",
        section=JUDGE,
        choices=("ema_only", "both"),
    )
    ema_samples: bool = option(True, help="Draw samples with the EMA weights.", section=JUDGE)

    # --- diffusion transformers (FLUX.1, ...): parts kept in files of their own ----------------------------------
    vae: str | None = option(
        None,
        help="Diffusion transformers: the VAE file (FLUX: ae.safetensors); found beside the transformer or in "
        "ComfyUI's models/vae if empty.",
        section=MODEL,
        path=True,
    )
    text_encoder: str | None = option(
        None,
        help="Diffusion transformers: the (first) text-encoder file (FLUX: clip_l.safetensors); found beside the "
        "transformer or in ComfyUI's models/clip | models/text_encoders if empty.",
        section=MODEL,
        path=True,
        aliases=("clip_l",),
    )
    text_encoder_2: str | None = option(
        None,
        help="Diffusion transformers with two text encoders: the second file (FLUX: t5xxl_fp16.safetensors); found "
        "like text_encoder if empty.",
        section=MODEL,
        path=True,
        aliases=("t5",),
    )
    text_max_length: int | None = option(
        None,
        help="Diffusion transformers: tokens per caption of the (long) text encoder; empty = the family's default "
        "(FLUX T5: 512 for dev, 256 for schnell).",
        section=MODEL,
        min=16,
        max=1024,
        aliases=("t5_max_length",),
    )
    timestep_sampling: str | None = option(
        None,
        help="Flow-matching models: how sigmas are drawn (shift: sigmoid moved by discrete_flow_shift, kohya's "
        "FLUX recipe; flux_shift: moved by the image size as diffusers' dynamic shifting does, kohya's flux_shift). "
        "Empty: the family's (FLUX.1, Z-Image: shift).",
        section=TRAIN,
        choices=("sigmoid", "logit_normal", "uniform", "shift", "flux_shift"),
    )
    discrete_flow_shift: float | None = option(
        None,
        help="Flow-matching models: the sigma shift of timestep_sampling shift. Empty: the family's (FLUX.1 3.1582, "
        "kohya's recipe; Z-Image 3.0, its scheduler's shift).",
        section=TRAIN,
        min=0.01,
    )
    sigmoid_scale: float = option(
        1.0,
        help="Flow-matching models: scale of the normal draw of sigmoid/shift sampling.",
        section=TRAIN,
        min=0.01,
    )
    loss_weighting: str = option(
        "none",
        help="Flow-matching models: loss weights per sigma (diffusers' SD3 schemes).",
        section=TRAIN,
        choices=("none", "sigma_sqrt", "cosmap"),
    )
    guidance_scale: float = option(
        1.0,
        help="FLUX.1-dev: the distilled guidance value the transformer is trained with.",
        section=TRAIN,
        min=0.0,
    )

    def check(self) -> None:
        """The shared rules, then the image config's cross-key rules (rules.py)."""
        super().check()
        check_consistency(self)

    @property
    def effective_unet_lr(self) -> float:
        return self.unet_lr if self.unet_lr is not None else self.learning_rate

    @property
    def effective_text_encoder_lr(self) -> float:
        return self.text_encoder_lr if self.text_encoder_lr is not None else self.learning_rate


def config_fields() -> tuple[dataclasses.Field, ...]:
    """The declared fields of TrainConfig, in order."""
    return dataclasses.fields(TrainConfig)
