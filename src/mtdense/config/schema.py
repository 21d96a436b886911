"""Typed, validated configuration.

Every section is a pydantic model with ``extra="forbid"`` and strict types, so an unknown key or a
value of the wrong type is an error that names the dotted key (see :mod:`mtdense.config.load`,
which adds the file). The ``model`` section is validated by the configuration class that the
chosen architecture registers (:func:`mtdense.models.register_model`), so each architecture owns
its options and the top-level schema never lists them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base of every config section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


TaskName = str
"""A key of :data:`mtdense.tasks.TASKS`, checked by ``DataConfig._known_tasks`` (a new task needs no edit here)."""


class SynthSpec(Section):
    """How to render the embedded synthetic benchmark when ``data.root`` does not exist yet.

    ``style`` is a name of :data:`mtdense.data.synthetic.styles.STYLES` (camera, palette, textures, lighting,
    sensor): ``street`` in style ``a`` and in style ``b`` are a source and a target domain with exact labels.
    """

    family: Literal["indoor", "street"] = "indoor"
    style: str = "a"
    train: int = Field(200, ge=1)
    val: int = Field(50, ge=1)
    size: list[int] = Field(default_factory=lambda: [96, 128], min_length=2, max_length=2)
    seed: int = 0

    @field_validator("style")
    @classmethod
    def _known_style(cls, v: str) -> str:
        from mtdense.data.synthetic.styles import STYLES

        if v not in STYLES:
            raise ValueError(f"unknown synthetic style {v!r}; expected one of {sorted(STYLES)}")
        return v


class ExtraData(Section):
    """One more training dataset mixed into every training batch (``data.extra``).

    ``dataset`` is a name of :func:`mtdense.data.open_dataset`; ``ratio`` the share of each training
    batch drawn from it (the primary ``data.dataset`` takes ``1 − Σ ratios``). Targets the dataset lacks
    (raw NYUD frames have no labels) are filled with the task's ignore value, so they do not train it.
    """

    dataset: str
    root: str
    split: str = "train"
    ratio: float = Field(gt=0, lt=1)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return _check_dataset(v)


class DomainData(Section):
    """Another dataset than ``data.dataset``, opened through the same machinery (:func:`mtdense.data.open_dataset`,
    the synthetic renderer when ``synth`` is given and ``root`` does not exist yet): a target domain.

    ``data.val_data`` evaluates a run on it (its ``data.val_split``) instead of on ``data.dataset``: a model trained on
    a source domain and evaluated on a target domain (source-only and UDA rows of DenseMTL's Table 6). Its classes
    must be those of ``data.dataset`` (checked when the trainer opens it).
    """

    dataset: str = "synthetic"
    root: str
    synth: SynthSpec | None = None
    # the size evaluation resizes this domain's images to (default: data.eval_size): a target domain with
    # another aspect ratio than the source (Cityscapes 1:2 vs VKITTI2 ~1:3.3) is evaluated undistorted
    eval_size: list[int] | None = Field(None, min_length=2, max_length=2)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return _check_dataset(v)


def _check_dataset(name: str) -> str:
    from mtdense.data.registry import list_datasets  # imported here: the datasets pull in torch

    if name not in list_datasets():
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(list_datasets())}")
    return name


class DataConfig(Section):
    """Dataset, tasks and augmentation.

    ``dataset`` is a name of :func:`mtdense.data.open_dataset`. ``extra`` mixes more datasets into the
    training set only (e.g. ``nyud_mt`` + raw ``nyud_raw`` frames, TRL/PSD Sec. 4.1), each with its share
    of every batch; validation uses ``dataset`` alone.

    ``tasks`` are the tasks whose final predictions are evaluated; ``aux_tasks`` are supervised only
    through intermediate outputs (PAD-Net's and MTI-Net's auxiliary edges and normals).
    """

    dataset: str = "synthetic"
    root: str = "data/synth_indoor"
    extra: list[ExtraData] = Field(default_factory=list)
    synth: SynthSpec | None = None
    #: evaluate on this dataset's ``val_split`` instead of ``dataset``'s (a target domain, :class:`DomainData`)
    val_data: DomainData | None = None
    tasks: list[TaskName] = Field(default_factory=lambda: ["semseg", "depth", "normals", "edge"], min_length=1)
    aux_tasks: list[TaskName] = Field(default_factory=list)
    train_split: str = "train"
    val_split: str = "val"
    crop_size: list[int] | None = Field(None, min_length=2, max_length=2)
    eval_size: list[int] | None = Field(None, min_length=2, max_length=2)
    scales: list[float] = Field(default_factory=lambda: [1.0])
    #: continuous zoom factor range [low, high] instead of the discrete ``scales`` (PASCAL recipe: 0.75-1.25)
    scale_range: list[float] | None = Field(None, min_length=2, max_length=2)
    #: random in-plane rotation in [-rotation, rotation] degrees (PASCAL recipe: 20)
    rotation: float = Field(0.0, ge=0, le=180)
    depth_divide_by_scale: bool = True
    flip: bool = True
    photometric: bool = False
    cache: bool = True
    num_workers: int = Field(0, ge=0)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return _check_dataset(v)

    @field_validator("extra")
    @classmethod
    def _ratios_below_one(cls, v: list[ExtraData]) -> list[ExtraData]:
        total = sum(e.ratio for e in v)
        if v and not total < 1:
            raise ValueError(
                f"the ratios of data.extra sum to {total:g}; they must leave a share (1 - sum > 0) for data.dataset"
            )
        return v

    @field_validator("tasks", "aux_tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        from mtdense.tasks import TASKS  # imported here: the task classes pull in torch, losses and meters

        unknown = [t for t in v if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; valid tasks: {', '.join(sorted(TASKS))}")
        return v

    @field_validator("aux_tasks")
    @classmethod
    def _aux_disjoint(cls, v: list[str], info: Any) -> list[str]:
        overlap = set(v) & set(info.data.get("tasks", []))
        if overlap:
            raise ValueError(f"tasks {sorted(overlap)} are listed both in data.tasks and data.aux_tasks")
        return v


class LossConfig(Section):
    """Per-task losses and their balancing (fixed weights or learned uncertainty, TRL eq. 7).

    ``weights``: task → weight of the ``fixed`` balancer. The ``uncertainty`` balancer learns its
    weights, so giving ``weights`` with it is an error (they would be silently ignored); its resolved
    config holds ``weights: {}``.

    ``tag_weights``: extra factors on intermediate (deep-supervision) outputs ``"<tag>/<task>"``, on
    top of the task weight, under either balancer. A key is a tag or tag prefix (``"initial"``,
    ``"initial/s8"``: every task's output under it) or a tag prefix and a task (``"initial/edge"``:
    that task only — "tag × task"). For an output key the most specific entry wins: the longest tag
    prefix first, and at equal prefix the task-specific entry. PAD-Net (Sec. 4.1): 0.8 on the
    intermediate contours and normals only, ``{initial/edge: 0.8, initial/normals: 0.8}``. A key that
    matches no output of the model is an error naming it (checked on the first training step).

    ``edge``: the contour loss: ``balanced`` (class-balanced BCE with ``edge_pos_weight``, MTI-Net
    Sec. 3) or ``ce`` (plain binary cross-entropy, PAD-Net Sec. 3.6).

    ``balancer``: a key of :data:`mtdense.losses.balancing.BALANCERS`: ``fixed``, ``uncertainty``
    (TRL eq. 7), ``dwa``, ``rlw``, ``gradnorm`` (loss-level) or ``pcgrad``, ``mgda``, ``cagrad``
    (gradient-level, on the shared encoder; single process only). ``balancer_args``: that balancer's
    own options, validated by its ``Args`` model (unknown keys are errors; the resolved config holds
    every option with its default): ``uncertainty`` {init: 0.5, kinds: {}}, ``dwa`` {temperature: 2,
    window: 100 steps}, ``rlw`` {seed: 0}, ``gradnorm`` {alpha: 1.5}, ``pcgrad`` {seed: 0}, ``cagrad``
    {c: 0.4}; ``fixed`` and ``mgda`` take none. Every balancer but ``uncertainty`` scales task ``t``'s
    losses by ``weights[t]`` first (the dynamic ones then weigh those scaled task losses).
    """

    weights: dict[str, float] = Field(
        default_factory=lambda: {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0}
    )
    tag_weights: dict[str, float] = Field(default_factory=dict)
    balancer: str = "fixed"
    balancer_args: dict[str, Any] = Field(default_factory=dict)
    depth: Literal["l1", "l2", "berhu"] = "l1"
    normals: Literal["l1", "cosine", "l2"] = "l1"
    edge: Literal["balanced", "ce"] = "balanced"
    edge_pos_weight: float = Field(0.95, gt=0, lt=1)

    @field_validator("balancer")
    @classmethod
    def _known_balancer(cls, v: str) -> str:
        from mtdense.losses.balancing import BALANCERS  # imported here: the balancers pull in torch

        if v not in BALANCERS:
            raise ValueError(f"unknown loss balancer {v!r}; valid balancers: {', '.join(BALANCERS)}")
        return v

    @model_validator(mode="after")
    def _args_fit_balancer(self) -> LossConfig:
        from mtdense.errors import ConfigError
        from mtdense.losses.balancing import balancer_args

        try:
            self.balancer_args = balancer_args(self.balancer, self.balancer_args)  # defaults filled in
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _weights_fit_balancer(self) -> LossConfig:
        if self.balancer == "uncertainty":
            if "weights" in self.model_fields_set and self.weights:
                raise ValueError(
                    f"loss.weights {self.weights} would be ignored by balancer 'uncertainty' (it learns the "
                    "task weights, TRL eq. 7); remove loss.weights or set it to {}"
                )
            self.weights = {}
        return self


class TrainConfig(Section):
    """Optimiser, schedule and loop settings.

    ``phase1_steps`` > 0 runs the two-phase schedule of PAD-Net (Sec. 4.1) for models that define
    one (``phase_outputs`` / ``phase_parameters``): the first ``phase1_steps`` steps supervise only the
    phase-1 outputs and update only ``phase_parameters(1)`` at the base learning rate ``phase1_lr``;
    then every output and parameter at ``lr``. The schedule (warm-up, poly/step decay) restarts at
    the phase boundary and runs over each phase's own length (see :func:`mtdense.engine.setup.lr_factor`).
    ``threads`` sets torch's intra-op threads during :meth:`Trainer.train` (``None``: torch's default);
    the previous setting is restored when training returns.
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0)
    backbone_lr_mult: float = Field(1.0, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2)
    schedule: Literal["poly", "step", "constant"] = "poly"
    poly_power: float = 0.9
    step_milestones: list[int] = Field(default_factory=list)
    step_gamma: float = 0.1
    warmup_steps: int = Field(0, ge=0)
    max_steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1)
    clip_grad_norm: float | None = Field(None, gt=0)
    bf16: bool = False
    channels_last: bool = True
    #: run the training forward and backward through torch.compile (mtdense.engine.compile): fused
    #: kernels for a one-off compile at the first step (minutes for the HRNet models); same results
    #: up to float rounding; falls back to eager mode, with a warning, where it cannot compile
    compile: bool = False
    eval_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    threads: int | None = Field(None, ge=1)
    phase1_steps: int = Field(0, ge=0)
    phase1_lr: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _phases_fit(self) -> TrainConfig:
        if self.phase1_steps and self.phase1_steps >= self.max_steps:
            raise ValueError(
                f"train.phase1_steps ({self.phase1_steps}) must be below train.max_steps ({self.max_steps}) "
                "so that phase 2 runs"
            )
        if self.phase1_lr is not None and not self.phase1_steps:
            raise ValueError("train.phase1_lr is set but train.phase1_steps is 0 (no phase 1 to use it)")
        return self


class EvalConfig(Section):
    """Evaluation: batch size, exact edge odsF, the depth protocol, and the single-task reference for Δm.

    Depth protocols on NYUD-v2: the MTI-Net / ATRC line pools every valid pixel of the split
    (``depth_reduction: pixel``, no crop or caps); the Eigen line that TRL and PSD follow averages per
    image (``image``) inside the Eigen crop (``depth_crop: eigen``, 480×640 inputs) with ground truth and
    predictions capped to ``depth_min``…``depth_max`` = 1e-3…10 m (Eigen et al., NIPS 2014, Sec. 4.1).

    ``precise_bn``: before each evaluation during training, re-estimate every BatchNorm layer's running
    statistics over this many training batches (:mod:`mtdense.engine.precise_bn`); ``null`` (the papers'
    protocol) evaluates with the moving averages training kept. ``null`` rather than 0 for "off", so that a run
    or checkpoint written before this key existed still equals its config (a key one side lacks and the other
    holds as ``None`` is no change, :func:`mtdense.engine.checkpoint.material_changes`). The checkpoint written
    at that step holds the re-estimated statistics, so ``mtdense eval`` of the run reproduces the trainer's scores.
    """

    batch_size: int = Field(8, ge=1)
    edge_exact: bool = True
    edge_max_dist: float = Field(0.011, gt=0)
    depth_reduction: Literal["pixel", "image"] = "pixel"
    depth_crop: Literal["eigen"] | None = None
    depth_min: float | None = Field(None, ge=0)
    depth_max: float | None = Field(None, gt=0)
    baseline: str | None = None
    precise_bn: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _caps_ordered(self) -> EvalConfig:
        if self.depth_min is not None and self.depth_max is not None and not self.depth_min < self.depth_max:
            raise ValueError(f"eval.depth_min ({self.depth_min}) must be below eval.depth_max ({self.depth_max})")
        return self


class BackboneConfig(Section):
    """A backbone from :mod:`mtdense.backbones` and an optional local ImageNet checkpoint."""

    name: str = "resnet18"
    pretrained: str | None = None
    output_stride: int | None = None


class ModelConfig(Section):
    """Base of every architecture's config: ``name`` picks the architecture, ``backbone`` its encoder."""

    name: str
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)


class UdaTarget(DomainData):
    """The unlabelled target domain of ``uda``: :class:`DomainData`, the split whose images are used, and the
    target's own rescaling factors (``null``: ``data.scales``; e.g. Cityscapes' 2048×1024 frames need another
    factor than a synthetic source's to reach the same crop); the rest of the training augmentation is the source's."""

    split: str = "train"
    scales: list[float] | None = Field(None, min_length=1)


class UdaConfig(Section):
    """Multi-task unsupervised domain adaptation, MTL-UDA (Lopes et al., WACV 2023, Sec. 4.5, Table 6): output-level
    adversarial training with one patch discriminator per task output (:mod:`mtdense.engine.uda`).

    ``target``: the unlabelled target dataset (only its images are read). ``adv_weight``: weight of the generator's
    adversarial term (0.005). ``lr``, ``betas``, ``poly_power``: the discriminators' own Adam (1e-4, (0.9, 0.99)) with
    poly decay over ``train.max_steps``. ``disc_channels``: width of the first discriminator conv (64; the others
    double it up to 8×). ``batch_size``: target images per step (``null``: ``train.batch_size``, the paper's mixed
    batches of as many source as target images). ``side_outputs``: discriminators also on the deep-supervision outputs
    (the 3-ways decoder's before its exchange block), as the authors' code aligns both supervised scales; ``false``:
    final outputs only.
    """

    target: UdaTarget
    adv_weight: float = Field(0.005, ge=0)
    lr: float = Field(1e-4, gt=0)
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.99], min_length=2, max_length=2)
    poly_power: float = Field(0.9, ge=0)
    disc_channels: int = Field(64, ge=1)
    batch_size: int | None = Field(None, ge=1)
    side_outputs: bool = True


class ProbeConfig(Section):
    """The gradient probe (:mod:`mtdense.engine.probe`): every ``every`` steps (a multiple of ``train.log_every``),
    log each task's gradient norm on the shared parameters, its loss weight as the balancer applies it, and the
    cosine between every two tasks' gradients, in ``metrics.jsonl``. The run's weights are unchanged by it."""

    every: int = Field(50, ge=1)


class Config(Section):
    """The whole experiment. Optional sections (``uda``, ``probe``) switch on trainer extensions
    (:data:`mtdense.engine.setup.EXTENSIONS`)."""

    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: Any = None
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    uda: UdaConfig | None = None
    probe: ProbeConfig | None = None
