"""Applications: the config-driven runners behind the scripts. `infer` (scripts/infer.py: folders of faces through
a pipeline, outputs and results.json), `evaluate` (scripts/evaluate.py: metrics and reports of restored folders)
and `quickstart` (scripts/quickstart.py: the small-scale recipe end to end on the bundled photos); `cli` holds the
command lines themselves (`honestface-infer`, ... when installed; scripts/*.py call them).

With `honestface.training`, this is the only package that reads configs (`honestface.config`); the libraries it
drives (`pipelines`, `metrics`, `models`, `data`, `face`) take plain typed arguments.
"""
