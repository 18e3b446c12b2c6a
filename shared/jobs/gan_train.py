"""gan.train: train a GAN (DCGAN, the lesson's dense GAN, progressive or MSG) on a built-in set or an upload."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shared.jobs.params import (
    BUILTIN_DATASETS,
    DATASET_CHOICES,
    EVERY_MAX,
    GAN_IMAGE_SIZES,
    GRAY_DATASETS,
    MAX_BATCH,
    MAX_CHECKPOINTS,
    MAX_SAMPLE_GRIDS,
    MAX_STEPS,
    MIN_CLASSES,
    POINT_DATASETS,
    JobParams,
    Reference,
    every_field,
    every_problems,
    is_stored,
    is_upload_ref,
    preset_filled,
    refuse,
    runtime_field,
    scale_unset_every,
)

GanArch = Literal["dcgan", "mlp", "progressive", "msg"]
GanLoss = Literal["bce", "hinge", "wgan-gp"]
GAN_LOSSES: tuple[str, ...] = get_args(GanLoss)  # the names workers/gan/losses.py implements
GanPreset = Literal["lesson", "stable"]
DiffAugmentPolicy = Literal["color", "translation", "cutout"]
PROGRESSIVE_ARCH = "progressive"
MSG_ARCH = "msg"
MULTISCALE_GAN_ARCHS = (PROGRESSIVE_ARCH, MSG_ARCH)
DEFAULT_GAN_IMAGE_SIZE = 32
IMAGE_EVAL_EVERY = 500  # default steps between image-quality evaluations (1,000 samples each)
MAX_N_CRITIC = 20
MAX_PACK = 8
MAX_MINIBATCH_STD = 64
MAX_PENALTY_WEIGHT = 1e4
MAX_LABEL_SMOOTHING = 0.5
_LESSON_GAN: dict[str, Any] = {
    # The lesson's notebook: BCE, Adam 2e-4 with beta1 0.5 for both nets, and no remedy.
    "loss": "bce",
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "r1_gamma": 0.0,
    "n_critic": 1,
    "label_smoothing": 0.0,
    "spectral_norm": False,
    "ema": None,
    "d_skip_threshold": None,
    "diffaugment": [],
    "lr_decay": "none",
    "g_batchnorm": True,
    "pack": 1,
}
# A preset carries the budget its documented figures were measured at (docs/benchmarks.md, "GAN
# quality"): steps and batch size, filled in like any other field when the caller gives none. Images:
# the digits FD table's 4,000 steps at batch 64; the point sets below.
IMAGE_PRESET_BUDGET: dict[str, Any] = {"steps": 4000, "batch_size": 64}
POINT_PRESET_BUDGETS: dict[str, dict[str, Any]] = {
    "ring8": {"steps": 16000, "batch_size": 128},  # stable: 8.0 of 8 modes, 92.6 % high quality (5 seeds)
    "grid25": {"steps": 48000, "batch_size": 128},  # stable: 24.6 of 25 modes, 89.6 % (5 seeds)
}
GAN_PRESETS: dict[str, dict[str, Any]] = {
    "lesson": {**_LESSON_GAN, **IMAGE_PRESET_BUDGET},
    # The best default we measured (docs/benchmarks.md, "GAN quality"): on images, the lesson's
    # settings plus an EMA generator and DiffAugment (translation, cutout) on everything D sees.
    # R1 (0.1) on D's gradient at the real images: on digits (seeds 0-2, 4,000 steps) FD 65.9 -> 39.3 and class KL
    # 0.025 -> 0.019; about 1.4x the time a step (docs/benchmarks.md, "Class coverage on digits").
    "stable": {
        **_LESSON_GAN,
        **IMAGE_PRESET_BUDGET,
        "ema": 0.999,
        "diffaugment": ["translation", "cutout"],
        "r1_gamma": 0.1,
    },
}
# What a preset sets differently on each 2-D point dataset (docs/benchmarks.md, "GAN quality"):
# a 2-D latent and half the lesson's width (G 128-256-512, D 256-128) put more samples on the
# modes than latent 100 at full width, and both rates fall linearly to 0. DiffAugment is for images.
# No batch norm in G and Adam 5e-4: each point then comes from its latent alone and sits closer to
# a mode (grid25 at 16,000 steps: 66% HQ against 50% with BN and Adam 1e-3).
# ring8 adds PacGAN packing (D judges pairs): it catches the collapse that G without batch norm
# fell into there on one seed in five. On grid25 packing cost modes, and no seed of five collapsed.
_POINT_STABLE = {
    "r1_gamma": 0.0,  # it cost 1.3 points of HQ and 19 % more time on grid25 (docs/benchmarks.md)
    "lr_decay": "linear",
    "diffaugment": [],
    "nz": 2,
    "ngf": 32,
    "ndf": 32,
    "lr_g": 5e-4,
    "lr_d": 5e-4,
    "g_batchnorm": False,
}
GAN_POINT_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "ring8": {
        "lesson": POINT_PRESET_BUDGETS["ring8"],
        "stable": {**_POINT_STABLE, "pack": 2, **POINT_PRESET_BUDGETS["ring8"]},
    },
    "grid25": {"lesson": POINT_PRESET_BUDGETS["grid25"], "stable": {**_POINT_STABLE, **POINT_PRESET_BUDGETS["grid25"]}},
}


class GanTrainParams(JobParams):
    """Train a GAN (DCGAN or the lesson's dense GAN) on a built-in dataset or an uploaded image folder."""

    preset: GanPreset | None = Field(
        default=None,
        description="Fill in the loss, learning rates and remedies; fields given explicitly win. lesson: the "
        "notebook's settings with nothing added; stable: an EMA generator (0.999) and, on images, DiffAugment "
        "translation and cutout and an R1 penalty of 0.1 (neither with arch progressive or msg, no R1 with "
        "compile or loss wgan-gp); on the point datasets latent 2, "
        "ngf = ndf = 32, no batch norm in G and Adam 5e-4 falling linearly to 0, and on ring8 pack 2. Either "
        "preset also fills in the budget its documented figures were measured at, unless steps or batch_size is "
        "given: ring8 16,000 steps and grid25 48,000 at batch 128; images 4,000 steps at batch 64.",
    )
    dataset: str = Field(
        default="digits",
        json_schema_extra=DATASET_CHOICES,
        description="A built-in dataset (digits, 10 classes; shapes: circles, squares and triangles, 3 classes, "
        "RGB, drawn at any size; ring8 and grid25 are 2-D point mixtures), a torchvision dataset (mnist, "
        "fashion-mnist, cifar10: from the worker's data cache, or downloaded), or the id of an image upload "
        "(sub-folders are classes).",
    )
    conditional: bool = Field(
        default=False,
        description="Condition G and D on the class labels (one-hot into G's latent and as label maps into D); "
        "needs a dataset with classes. Sample grids then show one class per row.",
    )
    arch: GanArch = Field(
        default="dcgan",
        description="dcgan (convolutional), mlp (the lesson's dense GAN: G 256-512-1024, D 512-256 at "
        "ngf = ndf = 64), progressive (progressive growing from 4 x 4 with fade-in; the resolution and "
        "fade_alpha metrics say where it is) or msg (MSG-GAN: D sees G's image at every scale); "
        "default: mlp for point datasets, dcgan for images.",
    )
    image_size: int = Field(
        default=DEFAULT_GAN_IMAGE_SIZE,
        description="Training resolution in pixels: 16, 32, 64 or 128 (images only).",
    )
    channels: Literal[1, 3] | None = Field(
        default=None,
        description="1 (grayscale) or 3 (RGB); default: 1 for digits, mnist and fashion-mnist, 3 for shapes, "
        "cifar10 and uploads (images only).",
    )
    steps: int = Field(default=2000, ge=1, le=MAX_STEPS, description="Generator updates to run.")
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH)
    loss: GanLoss = Field(
        default="bce", description="bce (non-saturating, with logits), hinge, or wgan-gp (gradient penalty 10)."
    )
    lr_g: float = Field(default=2e-4, gt=0, le=1.0, description="Generator Adam learning rate.")
    lr_d: float = Field(default=2e-4, gt=0, le=1.0, description="Discriminator Adam learning rate.")
    lr_decay: Literal["none", "linear"] = Field(
        default="none", description="linear: both learning rates fall linearly to zero over the steps."
    )
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    n_critic: int = Field(default=1, ge=1, le=MAX_N_CRITIC, description="D steps per G step.")
    r1_gamma: float = Field(
        default=0.0, ge=0, le=MAX_PENALTY_WEIGHT, description="R1 penalty weight on D's gradient at real data; 0: off."
    )
    mode_seeking: float = Field(
        default=0.0,
        ge=0,
        le=MAX_PENALTY_WEIGHT,
        description="MSGAN's mode-seeking term weight (Mao et al. 2019): G's loss adds this times 1 / (the mean "
        "distance between the fakes of the batch's two halves / the distance between their latents), so two "
        "latents far apart must give different samples. 0: off.",
    )
    label_smoothing: float = Field(
        default=0.0,
        ge=0,
        lt=MAX_LABEL_SMOOTHING,
        description="One-sided label smoothing (bce only): D's target for real data is 1 - label_smoothing.",
    )
    spectral_norm: bool = Field(default=False, description="Spectral normalisation on D's layers (replaces its BN).")
    ema: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Decay of an exponential moving average of G's weights (e.g. 0.999), used for samples, "
        "evaluation and generator.pt; null: off.",
    )
    d_skip_threshold: float | None = Field(
        default=None,
        gt=0,
        description="Skip D's update while its loss is below this (bce or hinge); skips are the d_skips metric.",
    )
    diffaugment: list[DiffAugmentPolicy] = Field(
        default_factory=list,
        description="DiffAugment policies applied to every D input, real and fake (images only): "
        "color, translation, cutout.",
    )
    g_batchnorm: bool = Field(
        default=True,
        description="Batch norm in the dense generator's hidden layers, as in the lesson (arch 'mlp' only; "
        "false: none, so each sample depends on its latent alone).",
    )
    pack: int = Field(
        default=1,
        ge=1,
        le=MAX_PACK,
        description="PacGAN packing: D judges this many samples at once (one logit per pack), which makes "
        "a generator that repeats itself easy to spot; must divide batch_size (arch mlp or dcgan, "
        "unconditional). 1: off.",
    )
    minibatch_std: int = Field(
        default=0,
        ge=0,
        le=MAX_MINIBATCH_STD,
        description="ProGAN's minibatch standard deviation layer in D (arch dcgan): the spread of each feature "
        "over groups of this many samples joins D's last features, so a generator that repeats itself or keeps "
        "to a few classes is easy to spot; the group must divide batch_size / pack. 0: off.",
    )
    nz: int = Field(default=100, ge=1, le=1024, description="Latent size.")
    ngf: int = Field(default=64, ge=4, le=1024, description="Generator width.")
    ndf: int = Field(default=64, ge=4, le=1024, description="Discriminator width.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    log_every: int = Field(default=1, ge=1, json_schema_extra=EVERY_MAX, description="Record metrics every N steps.")
    checkpoint_every: int = every_field(
        default=100,
        description=f"Checkpoint every N steps (at most {MAX_CHECKPOINTS} a job).",
    )
    sample_every: int = every_field(
        default=100,
        description=f"Sample grid from fixed noise every N steps (at most {MAX_SAMPLE_GRIDS} grids a job).",
    )
    eval_every: int | None = every_field(
        default=None,
        description="Quality metrics every N steps and at the end: modes and hq_share on point datasets, "
        "fd, kid, precision and recall on images (in a digits classifier's feature space), and on a labelled "
        "image set (digits, shapes, torchvision sets, uploads with class folders) class_kl and class_confidence "
        "by a classifier of its classes. Default: "
        f"sample_every on points, max(sample_every, {IMAGE_EVAL_EVERY}) on images.",
    )
    image_metrics: bool = Field(
        default=True, description="Compute fd, kid, precision and recall at evaluation ticks (images only)."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 autocast and channels_last on a CUDA GPU with bf16, fp32 elsewhere; "
        "fp32 or bf16 force it (losses stay fp32).",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the training step's G and D passes (arch dcgan or mlp; not with r1_gamma or "
        "wgan-gp, whose double backward it cannot take): on a CUDA GPU autotuned Triton kernels (mode "
        "max-autotune-no-cudagraphs), on CPU inductor's C++ kernels. The first steps pay a one-off compile of "
        "a minute or more, so it pays off on long runs. Off: the plain eager step.",
    )
    max_runtime_s: int | None = runtime_field()

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        dataset = data.get("dataset")
        point_presets = GAN_POINT_PRESETS.get(dataset) if isinstance(dataset, str) else None
        presets = (
            {name: values | point_presets[name] for name, values in GAN_PRESETS.items()}
            if point_presets is not None
            else GAN_PRESETS
        )
        left_off: set[str] = set()
        if data.get("arch") in MULTISCALE_GAN_ARCHS:  # they take no DiffAugment or R1: the preset leaves them off
            left_off |= {"diffaugment", "r1_gamma"}
        if data.get("compile") or data.get("loss") == "wgan-gp":  # compile takes no double backward; GP has its own
            left_off.add("r1_gamma")
        if left_off:
            presets = {name: {k: v for k, v in values.items() if k not in left_off} for name, values in presets.items()}
        filled = preset_filled(data, presets, info)
        if "arch" not in filled:
            filled["arch"] = "mlp" if filled.get("dataset") in POINT_DATASETS else "dcgan"
        return filled

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value in BUILTIN_DATASETS or is_upload_ref(value):
            return value
        raise ValueError(f"unknown dataset {value!r}: use one of {list(BUILTIN_DATASETS)} or an upload id")

    @field_validator("channels", mode="before")
    @classmethod
    def _integer_channels(cls, value: Any) -> Any:
        # A Literal compares by equality, so true and 3.0 would pass as 1 and 3
        if value is not None and type(value) is not int:
            raise ValueError(f"channels must be the integer 1 or 3, got {value!r}")
        return value

    @field_validator("image_size")
    @classmethod
    def _known_size(cls, value: int) -> int:
        if value not in GAN_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {list(GAN_IMAGE_SIZES)}, got {value}")
        return value

    @field_validator("diffaugment")
    @classmethod
    def _unique_policies(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"diffaugment lists a policy twice: {value}")
        return value

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> GanTrainParams:
        problems: list[tuple[str, str]] = []
        if self.points:
            what = f"dataset {self.dataset!r} is 2-D points, not images"
            if self.arch != "mlp":
                problems.append(("arch", f"{what}: use arch 'mlp'"))
            if self.image_size != DEFAULT_GAN_IMAGE_SIZE:
                problems.append(("image_size", f"{what}: leave image_size unset"))
            if self.channels is not None:
                problems.append(("channels", f"{what}: leave channels unset"))
            if self.diffaugment:
                problems.append(("diffaugment", f"{what}: DiffAugment applies to images only"))
            if self.conditional:
                problems.append(("conditional", f"{what}: class conditioning applies to labelled images"))
        elif self.conditional and self.arch != "dcgan":
            problems.append(("conditional", "class conditioning needs arch 'dcgan'"))
        if self.arch in MULTISCALE_GAN_ARCHS:
            why = f"arch {self.arch!r}"
            if self.points:
                problems.append(("arch", f"{why} trains images, not 2-D points"))
            if self.diffaugment:
                problems.append(("diffaugment", f"{why} does not support DiffAugment"))
            if self.r1_gamma or self.loss == "wgan-gp":
                field = "r1_gamma" if self.r1_gamma else "loss"
                problems.append((field, f"{why} supports the bce and hinge losses without gradient penalties"))
            resolutions = self.image_size.bit_length() - 2  # 4 x 4 ... image_size
            if self.arch == "progressive" and self.steps < resolutions:
                problems.append(
                    (
                        "steps",
                        f"{why} at {self.image_size} px grows through {resolutions} resolutions: "
                        f"give it at least {resolutions} steps",
                    )
                )
        if not self.g_batchnorm and self.arch != "mlp":
            problems.append(
                ("g_batchnorm", f"g_batchnorm false applies to the dense GAN (arch 'mlp'), not {self.arch!r}")
            )
        if self.pack > 1:
            if self.arch in MULTISCALE_GAN_ARCHS or self.conditional:
                why = f"arch {self.arch!r}" if self.arch in MULTISCALE_GAN_ARCHS else "conditional training"
                problems.append(("pack", f"pack applies to unconditional mlp and dcgan training, not {why}"))
            if self.batch_size % self.pack:
                problems.append(("pack", f"pack {self.pack} must divide batch_size {self.batch_size}"))
        if self.minibatch_std:
            if self.arch != "dcgan":
                problems.append(("minibatch_std", f"minibatch_std applies to arch 'dcgan', not {self.arch!r}"))
            elif (self.batch_size // self.pack) % self.minibatch_std:
                judged = f"batch_size {self.batch_size}" + (f" / pack {self.pack}" if self.pack > 1 else "")
                problems.append(("minibatch_std", f"minibatch_std {self.minibatch_std} must divide {judged}"))
        if self.label_smoothing and self.loss != "bce":
            problems.append(("label_smoothing", f"label_smoothing applies to the bce loss, not {self.loss!r}"))
        if self.d_skip_threshold is not None and self.loss == "wgan-gp":
            problems.append(("d_skip_threshold", "d_skip_threshold needs a loss bounded below (bce or hinge)"))
        if self.compile:
            if self.arch not in ("dcgan", "mlp"):
                problems.append(("compile", f"compile applies to arch 'dcgan' and 'mlp', not {self.arch!r}"))
            if self.r1_gamma or self.loss == "wgan-gp":
                why = "r1_gamma" if self.r1_gamma else "loss 'wgan-gp'"
                problems.append(("compile", f"compile cannot take the double backward of {why}"))
        if not is_stored(info):
            scale_unset_every(self, self.steps, {"sample_every": MAX_SAMPLE_GRIDS, "checkpoint_every": MAX_CHECKPOINTS})
            problems += every_problems("sample_every", self.sample_every, self.steps, MAX_SAMPLE_GRIDS, "sample grids")
            problems += every_problems(
                "checkpoint_every", self.checkpoint_every, self.steps, MAX_CHECKPOINTS, "checkpoints"
            )
            problems += every_problems("log_every", self.log_every, self.steps)
            problems += every_problems("eval_every", self.eval_every, self.steps)
        refuse(self, problems)
        return self

    def references(self) -> list[Reference]:
        """An uploaded dataset, with classes when training is conditional."""
        if not is_upload_ref(self.dataset):
            return []
        classes = MIN_CLASSES if self.conditional else 0
        return [
            Reference(
                field="params.dataset", ref=self.dataset, upload_kind="images", min_classes=classes,
                classes_field="params.conditional" if classes else None,
            )
        ]  # fmt: skip

    @property
    def points(self) -> bool:
        """True for the 2-D point datasets (ring8, grid25)."""
        return self.dataset in POINT_DATASETS

    def resolved_channels(self) -> int:
        """Channel count after applying the dataset default."""
        if self.channels is not None:
            return self.channels
        return 1 if self.dataset in GRAY_DATASETS else 3

    def resolved_eval_every(self) -> int:
        """Steps between quality evaluations."""
        if self.eval_every is not None:
            return self.eval_every
        return self.sample_every if self.points else max(self.sample_every, IMAGE_EVAL_EVERY)
