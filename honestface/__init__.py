"""honestface: one-step diffusion face restoration (HonestFace, VSPBFR) for research.

Papers:
- HonestFace: Wang et al., "HonestFace: Towards Honest Face Restoration with One-Step Diffusion Model",
  arXiv 2505.18469 (2025).
- VSPBFR: Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration",
  arXiv 2412.21042.

Importing the package is cheap: heavy dependencies (torch, diffusers, dlib, ...) load only in the modules
that need them. Logging goes to the `honestface` logger (`honestface.log`); importing the package blocks the
unused, noisy `bitsandbytes` import that peft would otherwise make (set HONESTFACE_ALLOW_BITSANDBYTES=1 to keep it).
"""

from honestface.log import block_unused_imports as _block_unused_imports

__version__ = "0.1.0"

_block_unused_imports()

__all__ = ["__version__"]
