"""Learning-rate tuning pipeline: a NumPy training core, Optuna studies and MLflow tracking."""

__version__ = "0.1.0"
