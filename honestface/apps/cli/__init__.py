"""The command lines of honestface, one module per command, each with `main(argv=None, prog=...) -> int`:

    honestface-train       honestface.apps.cli.train        (scripts/train.py)
    honestface-infer       honestface.apps.cli.infer        (scripts/infer.py)
    honestface-evaluate    honestface.apps.cli.evaluate     (scripts/evaluate.py)
    honestface-prepare     honestface.apps.cli.prepare      (scripts/prepare_data.py)
    honestface-weights     honestface.apps.cli.weights      (scripts/weights.py)
    honestface-quickstart  honestface.apps.cli.quickstart   (scripts/quickstart.py)

The console scripts come with `pip install honestface` (pyproject `[project.scripts]`); the repository's scripts/
call the same `main`, so a fresh clone runs without installing anything, and `python -m honestface.apps.cli.<name>`
works too (e.g. `accelerate launch -m honestface.apps.cli.train`). They live under honestface.apps because, with
honestface.training, that is the only package that reads configs (our rule). Shared start-up and the one-line
error rule: honestface.apps.cli.common.
"""
