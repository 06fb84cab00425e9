"""The arithmetic: arrays, models, optimizers, schedules, the training loop, the range test's maths.

Pure NumPy: no Optuna, no MLflow, no matplotlib, no pandas, no files, no terminal. Deterministic from a seed.
"""
