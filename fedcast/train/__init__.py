"""``fedcast train``: a whole federation in one process on the user's own data.

* :mod:`fedcast.train.config` the validated settings (flags and a TOML file)
* :mod:`fedcast.train.datasets` loading and the per-client holdout
* :mod:`fedcast.train.runner` one run, round by round, with divergence detection
* :mod:`fedcast.train.output` the model files, the curve, progress and JSON lines
"""
