"""Typed, validated configuration.

Every section is a pydantic model with ``extra="forbid"`` and strict types, so an unknown key or a
value of the wrong type is an error that names the dotted key (see :mod:`mtdense.config.load`,
which adds the file). The ``model`` section is validated by the configuration class that the
chosen architecture registers (:func:`mtdense.models.register_model`), so each architecture owns
its options and the top-level schema never lists them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """Base of every config section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


TaskName = Literal["semseg", "depth", "normals", "edge"]


class SynthSpec(Section):
    """How to render the embedded synthetic benchmark when ``data.root`` does not exist yet."""

    family: Literal["indoor", "street"] = "indoor"
    train: int = Field(200, ge=1)
    val: int = Field(50, ge=1)
    size: list[int] = Field(default_factory=lambda: [96, 128], min_length=2, max_length=2)
    seed: int = 0


class DataConfig(Section):
    """Dataset, tasks and augmentation.

    ``tasks`` are the tasks whose final predictions are evaluated; ``aux_tasks`` are supervised only
    through intermediate outputs (PAD-Net's and MTI-Net's auxiliary edges and normals).
    """

    dataset: Literal["nyud_mt", "synthetic"] = "synthetic"
    root: str = "data/synth_indoor"
    synth: SynthSpec | None = None
    tasks: list[TaskName] = Field(default_factory=lambda: ["semseg", "depth", "normals", "edge"], min_length=1)
    aux_tasks: list[TaskName] = Field(default_factory=list)
    train_split: str = "train"
    val_split: str = "val"
    crop_size: list[int] | None = Field(None, min_length=2, max_length=2)
    eval_size: list[int] | None = Field(None, min_length=2, max_length=2)
    scales: list[float] = Field(default_factory=lambda: [1.0])
    depth_divide_by_scale: bool = True
    flip: bool = True
    photometric: bool = False
    cache: bool = True
    num_workers: int = Field(0, ge=0)

    @field_validator("aux_tasks")
    @classmethod
    def _aux_disjoint(cls, v: list[str], info: Any) -> list[str]:
        overlap = set(v) & set(info.data.get("tasks", []))
        if overlap:
            raise ValueError(f"tasks {sorted(overlap)} are listed both in data.tasks and data.aux_tasks")
        return v


class LossConfig(Section):
    """Per-task losses and their balancing (fixed weights or learned uncertainty, TRL eq. 7)."""

    weights: dict[str, float] = Field(
        default_factory=lambda: {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0}
    )
    tag_weights: dict[str, float] = Field(default_factory=dict)
    balancer: Literal["fixed", "uncertainty"] = "fixed"
    depth: Literal["l1", "l2", "berhu"] = "l1"
    normals: Literal["l1", "cosine", "l2"] = "l1"
    edge_pos_weight: float = Field(0.95, gt=0, lt=1)


class TrainConfig(Section):
    """Optimiser, schedule and loop settings.

    ``phase1_steps`` > 0 runs the two-phase schedule of PAD-Net (Sec. 4.1) for models that define
    one (``phase_outputs``): the first steps supervise only the phase-1 outputs (the front-end with
    scene parsing), so only the parameters those outputs depend on receive gradients; then all.
    ``threads`` sets torch's intra-op threads (``None``: torch's default).
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
    eval_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    threads: int | None = Field(None, ge=1)
    phase1_steps: int = Field(0, ge=0)


class EvalConfig(Section):
    """Evaluation: batch size, exact edge odsF, and the single-task reference for Δm."""

    batch_size: int = Field(8, ge=1)
    edge_exact: bool = True
    edge_max_dist: float = Field(0.011, gt=0)
    depth_reduction: Literal["pixel", "image"] = "pixel"
    baseline: str | None = None


class BackboneConfig(Section):
    """A backbone from :mod:`mtdense.backbones` and an optional local ImageNet checkpoint."""

    name: str = "resnet18"
    pretrained: str | None = None
    output_stride: int | None = None


class ModelConfig(Section):
    """Base of every architecture's config: ``name`` picks the architecture, ``backbone`` its encoder."""

    name: str
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)


class Config(Section):
    """The whole experiment."""

    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: Any = None
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
