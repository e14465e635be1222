"""Model components (diffusers ModelMixin/ConfigMixin modules): HonestFace here, VSPBFR in `vspbfr/`."""

from .discriminator import LatentDiscriminator  # noqa: F401
from .face_identity_encoder import FaceIdentityEncoder, IdentityBackbone  # noqa: F401
from .facial_feature_extractor import FacialFeatureExtractor, ImageTokenBackbone  # noqa: F401
from .fusion import FUSION_PRESETS, FeatureFusion, drop_references, sample_reference_dropout  # noqa: F401
from .generator import DEFAULT_LORA_TARGETS, OneStepGenerator, one_step_x0  # noqa: F401
from .honestface import HonestFace, HonestFaceOutput, ReferenceFeatures  # noqa: F401
from .ide import IDE_PRESETS, TINY_CLIP_VISION_CONFIG  # noqa: F401
from .vre import VRE_PRESETS, VisualRepresentationEmbedder, VREOutput, select_unique_codes  # noqa: F401
from .vspbfr import VSPBFR, VSPBFR_PRESETS, build_vspbfr  # noqa: F401  (lazy: honestface/models/vspbfr/__init__.py)
