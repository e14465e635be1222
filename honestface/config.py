"""Run configuration: typed OmegaConf schemas, YAML inheritance, `key=value` overrides, validation, saving.

Only `scripts/`, `honestface/apps` and `honestface/training` read configs; everything else takes plain typed arguments.

`load_config` takes a YAML path or the name of a config shipped in the package (`honestface/configs/`, the
repository's `configs/`): `tiny/honestface` is `honestface/configs/tiny/honestface.yaml`. Our rule: an existing path
always wins; a name is tried only for a path that does not exist and has no suffix, so `honestface-train --config
tiny/honestface` works from any folder once the package is installed.

A YAML file may start with `defaults: [other.yaml, ...]` (paths relative to the file); those are merged first,
in order, then the file itself, then the command-line overrides (`train.max_steps=10 loss.mfa=0`).
Every value is checked against the dataclass schemas below: an unknown key, a wrong type or a value outside
the allowed choices raises `ConfigError` with one line naming the key, the file and the allowed values.
`save_config` writes the fully resolved config next to a run's outputs, so every run can be repeated.

Section by section, the defaults are our choices where the HonestFace paper is silent (see docs/architecture.md).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from honestface.pipelines import PIPELINES
from honestface.training.tasks import TASKS

CONFIG_FILENAME = "config.yaml"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the shipped run configs (package data)

# Choices that come from the library's own tables (both light to import), so a new model family or training stage
# is one table entry, not also an edit here: honestface.pipelines.PIPELINES and honestface.training.tasks.TASKS.
ModelFamily = Literal[tuple(PIPELINES)]  # type: ignore[valid-type]
TrainingStage = Literal[tuple(TASKS)]  # type: ignore[valid-type]


@dataclass
class ModelConfig:
    name: ModelFamily = "honestface"
    preset: str | None = None  # a named size of the model family, e.g. "sd21" or "tiny"
    pretrained: str | None = None  # folder written by save_pretrained, a released name, or a Hub id org/name
    revision: str | None = None  # Hub revision (branch, tag or commit) when `pretrained` is a Hub id
    params: dict[str, Any] = field(default_factory=dict)  # constructor arguments that override the preset


@dataclass
class FaceConfig:
    detector: Literal["dlib", "mtcnn", "retinaface", "scrfd"] = "mtcnn"
    landmarks: Literal["dlib68", "awing98", "insightface106"] = "dlib68"
    identity: Literal["dlib", "arcface_onnx", "iresnet"] = "dlib"
    parsing: Literal["none", "bisenet", "parsenet"] = "none"
    select: Literal["largest", "center", "score", "all"] = "largest"
    min_size: int = 32  # faces whose box is smaller (pixels) are left alone


@dataclass
class DataConfig:
    dataset: Literal["reference", "paired"] = "reference"  # identity folders with references, or plain HQ faces
    train_dir: str | None = None  # aligned HQ faces: one folder per identity ("reference"), any nesting ("paired")
    val_dir: str | None = None  # same layout; validation images come from here (else from train_dir)
    lq_dir: str | None = None  # precomputed LQ of val_dir (same relative paths), e.g. from prepare_data make-testset
    resolution: int = 512
    num_references: int = 4  # K
    reference_dropout: float = 0.1  # probability of training a sample blind (K=0)
    batch_size: int = 1
    num_workers: int = 2
    split_file: str | None = None  # identities to train on (one per line); default: every folder of train_dir


@dataclass
class DegradationConfig:
    preset: Literal["gfpgan", "daefr", "osdface", "codeformer", "difface", "refldm", "vspbfr", "realesrgan",
                    "tiny"] = "daefr"
    params: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's ranges


@dataclass
class LossConfig:
    mse: float = 1.0
    mse_space: Literal["pixel", "latent", "both"] = "pixel"
    perceptual: float = 1.0
    perceptual_type: Literal["ea_dists", "dists", "lpips_vgg", "lpips_alex", "ea_lpips_vgg", "ea_lpips_alex"] = (
        "ea_dists")
    identity: float = 0.1
    # recogniser of L_ID: auto = the model's identity backbone if it has one, else ArcFace (untrained with
    # networks=random); arcface; dlib = the bundled pretrained dlib ResNet (real, offline)
    identity_network: Literal["auto", "arcface", "dlib"] = "auto"
    mfa: float = 1.0
    mfa_references: bool = True  # also match texture statistics of the warped references
    adversarial: float = 0.02
    adversarial_type: Literal["softplus", "hinge"] = "softplus"
    r1: float = 0.0
    networks: Literal["pretrained", "random"] = "pretrained"  # random: untrained VGG/ArcFace (tests, tiny CPU runs)
    mfa_texture: Literal["gram", "meanstd"] = "gram"
    mfa_region_weights: dict[str, float] = field(default_factory=dict)  # overrides, e.g. {eyes: 2.0}


@dataclass
class OptimConfig:
    lr: float = 5e-5
    disc_lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    # What to train: the HonestFace G/D alternation, or an earlier stage of the small-scale recipe (a face VAE;
    # the VRE's dual VQ codebooks). `stage_params` are that stage's own options (checked by the stage).
    stage: TrainingStage = "honestface"
    stage_params: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/${model.name}"
    max_steps: int = 100_000
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    disc_start_step: int = 0  # generator-only warm-up steps before the discriminator starts
    d_steps_per_g: int = 1
    ema_decay: float = 0.0  # 0 = no EMA; else EMA of the trainable weights, used for validation and export
    max_bad_steps: int = 20  # consecutive non-finite losses tolerated (each skipped) before the run stops
    num_val_images: int = 4
    # "none" or one of accelerate's trackers (tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab,
    # trackio, all); checked against accelerate's list and the installed packages when the run starts
    report_to: str = "tensorboard"
    log_every: int = 50
    save_every: int = 1_000
    eval_every: int = 1_000
    keep_last: int = 3
    resume: str | None = None  # a checkpoint folder, or "latest"
    # a new run in a folder that holds another run's checkpoints / export: false = refuse; true = move the earlier
    # run's files aside and delete them once this run saves its first checkpoint (docs/architecture.md, Training)
    overwrite: bool = False


@dataclass
class InferConfig:
    input: str | None = None
    output: str | None = None
    references: str | None = None
    mode: Literal["aligned", "photo"] = "aligned"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    batch_size: int | None = None  # faces per model call; None: the pipeline's default_batch_size (CPU 1, GPU 4)
    max_references: int = 4
    color_fix: Literal["auto", "none", "wavelet", "adain"] = "auto"  # auto: wavelet for photos, none for aligned
    overwrite: bool = False  # replace existing outputs (inputs are never overwritten)
    compile: bool = False
    channels_last: bool = True  # HonestFace: convolution weights NHWC (faster VAE on CPU and GPU)
    vae_slicing: Literal["auto", "on", "off"] = "auto"  # HonestFace: VAE one face at a time; auto = on a CPU
    # on a CPU: freed activation buffers stay in the process for the next face instead of being mapped afresh
    # (glibc; honestface.models.loading.reuse_large_allocations)
    reuse_cpu_memory: bool = True
    # HonestFace on a CPU: the UNet's frozen convolution / linear weights packed once for oneDNN, not on every call
    # (honestface.models.cpu_prepack; 1-1.5 s once at SD size, so for a single face turn it off)
    prepack_cpu_weights: bool = True
    # "auto": references found as honestface.data.references.InferenceFolderDataset says (one folder for all,
    # a folder per input, a JSON / CSV mapping); "pool": `references` is a folder of many people's faces, each
    # input face gets the pool faces of its identity (pipelines.ReferencePool, matched by `ref_threshold`)
    reference_mode: Literal["auto", "pool"] = "auto"
    ref_threshold: float | None = None  # identity cosine; None: the identity encoder's default (dlib 0.93)
    allow_blind: bool = False  # auto mode: restore inputs that have no reference blind instead of failing them
    seed: int = 0
    skip_existing: bool = False  # leave inputs whose output exists alone (status "skipped")
    save_comparison: bool = False  # also write <stem>_comparison.png (input | restored)
    min_input_size: int = 16  # aligned mode: inputs whose shorter side is smaller (pixels) fail as "too small"
    upscale: int = 1  # photo mode: output scale of the whole photo
    resolution: int | None = None  # face size the model runs at; None: the model's native one (OSDFace 512)
    allow_output_in_input: bool = False  # permit an output folder inside the input folder
    onnx: str | None = None  # an ONNX export folder (honestface-export) to run instead of model.pretrained


@dataclass
class VideoConfig:
    """Video inference (`infer.input` a video file, or a folder of frames with `frames`); honestface.video."""

    frames: bool = False  # infer.input is a folder holding the frames of one clip (not a folder of faces)
    fps: float | None = None  # frame rate of a folder of frames; None: 25
    # temporal filter of each track's five points: gaussian (zero-lag, `sigma` frames), one_euro (causal:
    # `min_cutoff` Hz, `beta`), none
    smoothing: Literal["none", "gaussian", "one_euro"] = "gaussian"
    sigma: float = 1.5
    min_cutoff: float = 1.0
    beta: float = 0.0
    iou_threshold: float = 0.3  # a face joins a track whose last box it overlaps this much ...
    identity_threshold: float | None = None  # ... or whose identity it matches (None: the encoder's default)
    identity_veto: float | None = None  # an overlapping face less similar than this starts a new track (None: off)
    max_gap: int = 5  # frames a track may miss its face and go on
    min_track_length: int = 1  # shorter tracks are left as they are
    fade_frames: int = 2  # a restored face fades in / out over this many frames where its track starts / ends
    chunk_frames: int = 32  # frames restored and kept per chunk (what an interrupted run keeps)
    crf: int = 18  # H.264 quality of the output (0-51, lower is better)
    lossless: bool = False  # RGB-exact output codec (libx264rgb qp 0 / ffv1): untouched frames stay bit-identical


@dataclass
class EvalConfig:
    # `restored`: one folder, or a list of folders / `name=folder` items (one method each, compared side by side)
    restored: Any = None
    ground_truth: str | None = None
    references: str | None = None  # refs/<image stem path>/ or refs/<image's parent folder>/ (identity layout)
    lq: str | None = None  # the degraded inputs, same relative paths as ground_truth (shown in the report)
    metrics: list[str] | None = None  # None: every metric whose weights and backends are available
    output: str | None = None  # default: <parent of the first restored folder>/evaluation
    device: str = "auto"
    batch_size: int = 8
    fid_ref: str | None = None  # a folder or a saved statistics file; default: the ground-truth folder
    landmarks: str = "dlib68"  # landmarker of lmd_<landmarker> / ALD (our metrics)
    detector: str = "dlib"  # face detector of the landmark / identity metrics and of face_warp_error (videos)
    identity: str = "auto"  # identity network of ids_<network> / idangle_<network> / reference honesty
    # a published table's columns and settings (honestface.metrics.protocols): osdface, vqfr, pmrf, ntire2026, ...
    protocol: Literal["osdface", "vqfr", "pmrf", "ntire2026", "honestface"] | None = None
    test_set: str | None = None  # label of the test set, recorded with the numbers (e.g. celeba-test-daefr)
    crop_border: int | None = None  # pixels dropped on each side by psnr_y / ssim_y (BasicSR); None: 0 or the protocol's
    thumbnail: int = 160  # size (pixels) of the report's thumbnails


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # registry name (`.` written `_`) or bundled weight -> local path (honestface.weights); unknown names fail at load
    weights: dict[str, str] = field(default_factory=dict)


class ConfigError(ValueError):
    """A config file or override is invalid. The message is one line naming the key and what is allowed."""


def default_config() -> DictConfig:
    """The schema with all defaults, as a typed (struct) DictConfig."""
    return OmegaConf.structured(Config)


def _known_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return []
    keys = []
    for k in node:
        full = f"{prefix}{k}"
        keys.append(full)
        child = node._get_node(k)
        if isinstance(child, DictConfig) and child._metadata.object_type not in (None, dict):
            keys.extend(_known_keys(child, full + "."))
    return keys


def _explain(err: OmegaConfBaseException, source: str) -> ConfigError:
    """Turn an OmegaConf error into one line that names the key, the source and what is allowed."""
    key = getattr(err, "full_key", None) or "?"
    msg = str(getattr(err, "msg", None) or err).splitlines()[0].strip()
    if "not in" in msg or "Key '" in msg and "not" in msg:
        close = difflib.get_close_matches(key, _known_keys(default_config()), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return ConfigError(f"{source}: unknown config key '{key}'{hint}")
    return ConfigError(f"{source}: bad value for '{key}': {msg}")


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """The file and its `defaults`, depth first, each as (path, raw config) in merge order."""
    path = path.resolve()
    if path in chain:
        loop = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"config inheritance loop: {loop}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = OmegaConf.load(path)
    except Exception as e:  # yaml syntax errors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: not valid YAML: {first}") from e
    if raw is None or isinstance(raw, ListConfig):
        raise ConfigError(f"{path}: a config file must be a YAML mapping of sections")
    parents = raw.pop("defaults", None) or []
    if isinstance(parents, str):
        parents = [parents]
    out: list[tuple[Path, DictConfig]] = []
    for parent in parents:
        out.extend(_read_yaml(path.parent / str(parent), (*chain, path)))
    out.append((path, raw))
    return out


def shipped_configs() -> list[str]:
    """Names of the run configs shipped in the package (`honestface_sd21`, `tiny/honestface`, ...); the
    `accelerate/` files are `accelerate launch --config_file` files, not run configs."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml")
                  if p.parent.name != "accelerate")


def resolve_config_path(path: str | os.PathLike) -> Path:
    """The YAML file `path` names: `path` itself when it exists, else the shipped config of that name (no suffix)."""
    given = Path(path).expanduser()
    if given.exists():
        return given
    names = shipped_configs()
    if not given.suffix and given.as_posix() in names:
        return CONFIG_DIR / f"{given.as_posix()}.yaml"
    raise ConfigError(f"config file not found: {given.resolve()} (a shipped config can be given by name instead: "
                      f"{', '.join(names)})")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Schema defaults <- `defaults` of the YAML <- the YAML <- `key=value` overrides; validated and resolved.
    `path`: a YAML file, or the name of a shipped config (`tiny/honestface`; see `shipped_configs`)."""
    cfg = default_config()
    layers = _read_yaml(resolve_config_path(path)) if path is not None else []
    for source, raw in layers:
        try:
            cfg = OmegaConf.merge(cfg, raw)
        except OmegaConfBaseException as e:
            raise _explain(e, str(source)) from e
        _check_weight_keys(cfg, str(source))
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_steps=100)")
        key, _, value = item.partition("=")
        if key.strip() == "train.mixed_precision" and value.strip().lower() in ("no", "false"):
            item = "train.mixed_precision='no'"  # YAML 1.1 would read a bare `no` as the boolean false
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise _explain(e, f"override {item!r}") from e
        _check_weight_keys(cfg, f"override {item!r}")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise _explain(e, str(path) if path else "config") from e
    _check_values(cfg)
    return cfg


def _check_weight_keys(cfg: DictConfig, source: str) -> None:
    """`weights` is a free mapping in the schema; its keys must still name weights the library knows (the registry
    of honestface.weights, or a bundled weight), else a misspelt key would be silently ignored."""
    from honestface.weights import unknown_weight_key

    for name in cfg.weights:
        message = unknown_weight_key(str(name))
        if message is not None:
            raise ConfigError(f"{source}: {message}")


def _check_values(cfg: DictConfig) -> None:
    """Range checks that types alone cannot express."""
    positive = ["data.resolution", "data.batch_size", "train.max_steps", "train.gradient_accumulation_steps",
                "train.log_every", "train.save_every", "train.eval_every", "infer.batch_size",
                "eval.batch_size", "eval.thumbnail"]
    for key in positive:
        if OmegaConf.select(cfg, key) is not None and OmegaConf.select(cfg, key) <= 0:  # None: a default applies
            raise ConfigError(f"bad value for '{key}': must be > 0, got {OmegaConf.select(cfg, key)}")
    for key in ["data.num_references", "data.num_workers", "infer.max_references", "train.keep_last",
                "train.disc_start_step", "train.d_steps_per_g", "train.num_val_images", "train.max_bad_steps",
                "infer.min_input_size"]:
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"bad value for '{key}': must be >= 0, got {OmegaConf.select(cfg, key)}")
    for key in ["video.max_gap", "video.fade_frames", "video.sigma", "video.beta"]:
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"bad value for '{key}': must be >= 0, got {OmegaConf.select(cfg, key)}")
    for key in ["video.min_track_length", "video.chunk_frames", "video.min_cutoff"]:
        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"bad value for '{key}': must be > 0, got {OmegaConf.select(cfg, key)}")
    if cfg.video.fps is not None and cfg.video.fps <= 0:
        raise ConfigError(f"bad value for 'video.fps': must be > 0, got {cfg.video.fps}")
    if not 0 <= cfg.video.crf <= 51:
        raise ConfigError(f"bad value for 'video.crf': must be in [0, 51], got {cfg.video.crf}")
    if not 0.0 <= cfg.video.iou_threshold <= 1.0:
        raise ConfigError(f"bad value for 'video.iou_threshold': must be in [0, 1], got {cfg.video.iou_threshold}")
    if cfg.infer.upscale < 1:
        raise ConfigError(f"bad value for 'infer.upscale': must be >= 1, got {cfg.infer.upscale}")
    if cfg.infer.ref_threshold is not None and not -1.0 <= cfg.infer.ref_threshold <= 1.0:
        raise ConfigError(f"bad value for 'infer.ref_threshold': must be in [-1, 1], got {cfg.infer.ref_threshold}")
    if not 0.0 <= cfg.data.reference_dropout <= 1.0:
        raise ConfigError(f"bad value for 'data.reference_dropout': must be in [0, 1], got {cfg.data.reference_dropout}")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"bad value for 'train.ema_decay': must be in [0, 1), got {cfg.train.ema_decay}")
    if cfg.infer.resolution is not None and (cfg.infer.resolution < 8 or cfg.infer.resolution % 8):
        raise ConfigError(f"bad value for 'infer.resolution': must be a positive multiple of 8, got "
                          f"{cfg.infer.resolution}")
    if cfg.data.resolution % 8:
        raise ConfigError(f"bad value for 'data.resolution': must be a multiple of 8 (VAE), got {cfg.data.resolution}")
    for key, value in cfg.loss.items():
        if isinstance(value, float) and value < 0:
            raise ConfigError(f"bad value for 'loss.{key}': loss weights must be >= 0, got {value}")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, directory: str | os.PathLike, filename: str = CONFIG_FILENAME) -> Path:
    """Write the resolved config to `directory/filename` atomically and return its path."""
    from honestface.io import atomic_write_text

    return atomic_write_text(Path(directory) / filename, to_yaml(cfg))


def config_to_dict(section: DictConfig) -> dict[str, Any]:
    """A plain dict of one section, e.g. to pass `**config_to_dict(cfg.model.params)` to a constructor."""
    return OmegaConf.to_container(section, resolve=True)  # type: ignore[return-value]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:  # noqa: F821
    """The config arguments every script shares: --config FILE, --print-config, and key=value overrides."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config (may inherit others via `defaults:`), or "
                        "the name of a shipped one, e.g. tiny/honestface, honestface_sd21")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides in dot notation, e.g. train.max_steps=100 loss.mfa=0.5")


def config_from_args(args: Any) -> DictConfig:
    """Load the config named by the parsed script arguments; `--print-config` prints it and exits."""
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "print_config", False):
        print(to_yaml(cfg), end="")
        raise SystemExit(0)
    return cfg
