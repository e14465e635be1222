#!/usr/bin/env python
"""Restore a folder of faces (aligned 512 crops or whole photos), optionally with reference faces.

    python scripts/infer.py model.pretrained=runs/honestface/final infer.input=lq/ infer.output=restored/ infer.references=refs/

Existing files in the output folder are never overwritten unless infer.overwrite=true.
"""

import sys

from _bootstrap import config_script

if __name__ == "__main__":
    sys.exit(config_script(
        sys.argv[1:], prog="scripts/infer.py",
        description="Restore faces with a trained model. Inputs, outputs, references, precision and device are "
        "config keys under `infer.` (pass them as key=value).",
        epilog="example: python scripts/infer.py model.pretrained=runs/honestface/final infer.input=lq/ "
        "infer.output=out/ infer.references=refs/",
        runner="honestface.pipelines:run_inference", what="restoration", issue=7,
    ))
