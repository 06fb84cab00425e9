"""The training loop: set lr, forward/backward, check for divergence, step; once per epoch, evaluate and call the hook.

Pure NumPy: it knows nothing of Optuna, MLflow, files or the terminal. The study runner connects it to both
through ``hook``, which is called once per epoch and may stop training by returning True.

Divergence is decided here, not by a pruner, so that it never waits on a storage write: a non-finite loss (on any
mini-batch, or on the validation set) or an epoch's training loss above ``divergence_factor`` times the best
epoch loss so far stops training at once, and the result says at which epoch and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.core.arrays import Dataset
from pipeline.core.checks import check_float, check_int
from pipeline.core.models import Model
from pipeline.core.names import COMPLETED, DIVERGED, REGRESSION, STOPPED
from pipeline.core.optimizers import Optimizer


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced. ``lr`` is the rate of the epoch's first update (full batch: its only one)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float | None
    lr: float


@dataclass
class TrainResult:
    """Per-epoch curves (one entry per epoch run, the diverged epoch included) and how training ended."""

    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray | None
    lr: np.ndarray
    params: np.ndarray
    status: str
    reason: str
    diverged_epoch: int | None = None
    has_validation: bool = True
    params_history: np.ndarray | None = (
        None  # (epochs_run + 1, n_params) with trace_params: start, then each epoch
    )

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    @property
    def diverged(self) -> bool:
        return self.status == DIVERGED

    @property
    def monitored(self) -> np.ndarray:
        """The curve a tuner optimises: validation loss, or training loss when there is no validation set."""
        return self.val_loss if self.has_validation else self.train_loss

    @property
    def final_loss(self) -> float:
        return float(self.monitored[-1])

    @property
    def best_loss(self) -> float:
        finite = self.monitored[np.isfinite(self.monitored)]
        return float(finite.min()) if len(finite) else math.inf


Hook = Callable[[EpochRecord], "bool | None"]


def train(
    model: Model,
    optimizer: Optimizer,
    schedule: Callable[[int], float],
    data: Dataset,
    *,
    epochs: int,
    batch_size: int | None = None,
    seed: int = 0,
    params: np.ndarray | None = None,
    divergence_factor: float = 10.0,
    hook: Hook | None = None,
    trace_params: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data.X_train`` with ``optimizer`` at ``lr = schedule(step)``, one step per update.

    Args:
        batch_size: None = full batch (one update per epoch); 1 = single sample; k = mini-batches of k rows,
            reshuffled every epoch from ``seed``. A batch size >= the training set is full batch.
        seed: seeds the parameter initialisation (when ``params`` is None) and the mini-batch order.
        params: initial parameters (copied); default ``model.init_params(rng)``.
        divergence_factor: an epoch whose training loss exceeds this many times the best epoch loss so far has
            diverged (> 1; ``math.inf`` disables the check; a non-finite loss always counts as divergence).
        hook: called after every epoch that did not diverge with an :class:`EpochRecord`; returning True stops
            training with status ``"stopped"``.
        trace_params: keep a copy of the parameters at the start and after every epoch (for weight-trajectory
            plots); off by default because it costs memory and time.

    The epoch's ``train_loss`` is the mean of its mini-batch losses, each measured before its update (full batch:
    the loss at the start of the epoch); ``val_loss`` and ``val_accuracy`` are measured after the epoch.
    A stateful schedule (one with ``observe``, e.g. ReduceLROnPlateau) is shown the validation loss (the training
    loss without a validation set) once per epoch.
    """
    check_int(epochs, "epochs", "train", low=1)
    if batch_size is not None:
        check_int(batch_size, "batch_size", "train", low=1)
    check_float(divergence_factor, "divergence_factor", "train", low=1, low_open=True, inf_ok=True)

    rng = np.random.default_rng(seed)
    params = model.init_params(rng) if params is None else np.array(params, dtype=np.float64)
    optimizer.init(params)
    X, y, X_val, y_val = data.X_train, data.y_train, data.X_val, data.y_val
    n = len(y)
    if batch_size is not None and batch_size >= n:
        batch_size = None
    has_val = len(y_val) > 0
    classification = model.task != REGRESSION
    observe = getattr(schedule, "observe", None)

    train_curve = np.full(epochs, np.nan)
    val_curve = np.full(epochs, np.nan)
    acc_curve = np.full(epochs, np.nan) if classification and has_val and model.accuracy else None
    lr_curve = np.full(epochs, np.nan)
    best = math.inf
    step = 0
    status, reason, diverged_epoch = COMPLETED, f"completed {epochs} epochs", None
    epoch = -1
    history = [params.copy()] if trace_params else None

    # Overflow to inf/NaN is the legitimate outcome of too large a learning rate: it is detected below and
    # reported as divergence, so NumPy's warnings about it would only be noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for epoch in range(epochs):
            lr_curve[epoch] = float(schedule(step))
            if batch_size is None:
                loss, grad = model.loss_and_grad(params, X, y)
                if math.isfinite(loss):
                    optimizer.step(params, grad, lr_curve[epoch])
                step += 1
                epoch_loss = loss
            else:
                order = rng.permutation(n)
                Xs, ys = X[order], y[order]
                total = 0.0
                for start in range(0, n, batch_size):
                    lr = lr_curve[epoch] if start == 0 else float(schedule(step))
                    loss, grad = model.loss_and_grad(
                        params, Xs[start : start + batch_size], ys[start : start + batch_size]
                    )
                    if not math.isfinite(loss):
                        total = loss
                        break
                    total += loss * len(ys[start : start + batch_size])
                    optimizer.step(params, grad, lr)
                    step += 1
                epoch_loss = total / n if math.isfinite(total) else total
            train_curve[epoch] = epoch_loss
            if history is not None:
                history.append(params.copy())

            if not math.isfinite(epoch_loss):
                status, reason = DIVERGED, f"non-finite training loss ({epoch_loss}) at epoch {epoch}"
                break
            if epoch_loss > divergence_factor * best:
                status = DIVERGED
                reason = f"training loss {epoch_loss:.4g} > {divergence_factor:g} x best {best:.4g} at epoch {epoch}"
                break
            best = min(best, epoch_loss)

            val_loss = model.loss_unguarded(params, X_val, y_val) if has_val else math.nan
            val_curve[epoch] = val_loss
            if has_val and not math.isfinite(val_loss):
                status, reason = DIVERGED, f"non-finite validation loss ({val_loss}) at epoch {epoch}"
                break
            accuracy = None
            if acc_curve is not None:
                accuracy = acc_curve[epoch] = model.accuracy(params, X_val, y_val)
            if observe is not None:
                observe(val_loss if has_val else epoch_loss)
            if hook is not None and hook(
                EpochRecord(epoch, float(epoch_loss), float(val_loss), accuracy, float(lr_curve[epoch]))
            ):
                status, reason = STOPPED, f"stopped by hook at epoch {epoch}"
                break

        if status == DIVERGED:
            diverged_epoch = epoch
            # The curves of a diverged run end at the epoch that diverged; its validation loss is measured when
            # the parameters are still finite, and is +inf (never NaN, which trackers drop) when they are not.
            if has_val and math.isnan(val_curve[epoch]):
                val_curve[epoch] = model.loss(params, X_val, y_val) if np.isfinite(params).all() else math.inf
            for curve in (train_curve, val_curve) if has_val else (train_curve,):
                if math.isnan(curve[epoch]):
                    curve[epoch] = math.inf

    end = epoch + 1
    return TrainResult(
        train_loss=train_curve[:end],
        val_loss=val_curve[:end],
        val_accuracy=None if acc_curve is None else acc_curve[:end],
        lr=lr_curve[:end],
        params=params,
        status=status,
        reason=reason,
        diverged_epoch=diverged_epoch,
        has_validation=has_val,
        params_history=None if history is None else np.array(history),
    )
