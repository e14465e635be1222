#!/usr/bin/env python
"""Evaluate restored faces against ground truth and/or references (ALD, LMD, identity, IQA) and write a report.

    python scripts/evaluate.py eval.restored=out/ eval.ground_truth=hq/ eval.output=report/
"""

import sys

from _bootstrap import config_script

if __name__ == "__main__":
    sys.exit(config_script(
        sys.argv[1:], prog="scripts/evaluate.py",
        description="Compute restoration metrics. Folders and the metric list are config keys under `eval.` "
        "(pass them as key=value); face backends under `face.`.",
        epilog="example: python scripts/evaluate.py eval.restored=out/ eval.ground_truth=hq/ "
        "eval.metrics=[psnr,ids,ald]",
        runner="honestface.metrics:run_evaluation", what="evaluation", issue=8,
    ))
