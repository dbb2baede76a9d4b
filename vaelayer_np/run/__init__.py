"""The run machinery: settings of a run, datasets and tables, checkpoints, run folders, the
trainer, plots, the scikit-learn estimator and the ``vaelayer`` command."""
