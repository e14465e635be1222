"""The quickstart: the whole library on real bundled faces, offline, on a CPU (`run_quickstart`)."""

from honestface.apps.quickstart.run import QUICKSTART_METRICS, QuickstartResult, degrade_photo, run_quickstart

__all__ = ["QUICKSTART_METRICS", "QuickstartResult", "degrade_photo", "run_quickstart"]
