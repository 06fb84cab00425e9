"""The LR range test (Smith 2015, §3.3): raise the learning rate step by step while training, watch the loss.

One optimizer update per step at ``lr = ramp(step)`` (exponential or linear from ``start_lr`` to ``end_lr``,
or the sources' table of held values, :func:`segments_ramp`). The loss of each step is measured on the batch
just before its update, so ``losses[t]`` reflects the rates ``lrs[:t]``. It is smoothed with a bias-corrected
exponential moving average and the test stops once the smoothed loss exceeds ``stop_factor`` times its best
value (or the loss is not finite): that step is the *divergence point*. :func:`suggest` reads rates off the
smoothed curve and recommends a search range for a tuner.

Why the default ramp has 3000 steps (over 8 decades: ~375 per decade, each rate 0.6% above the last): on a
quadratic such as least squares, full-batch gradient descent is stable exactly for ``lr < 2 / lambda_max`` of
the Hessian (:func:`least_squares_bound`). While the ramp passes ``lr ~ 1 / lambda_max``, the factor
``|1 - lr lambda_max|`` that multiplies the error along the top eigenvector is close to 0 for several steps,
so that error is crushed down to round-off. Past the bound it grows again by ``|1 - lr_t lambda_max| > 1`` per
step, but the loss can only show it once it has been amplified back by many orders of magnitude (~1e8 and
more), and that takes a number of *steps*, not a range of rates: the coarser the ramp, the further past the
bound the test stops. On standardised diabetes (bound 0.244) the divergence point is 9.2x the bound with
fastai's 100 steps over 1e-7..10, 2.7x with 1000, 1.96x with 2000 and 1.7x with 3000. Mini-batch noise keeps
re-exciting the top direction (batches of 32 stopped at 1.03-1.13x the bound over 4 seeds), but the
deterministic case needs the finer ramp. NumPy steps cost microseconds, so 3000 steps are cheap here (a
deep-learning library pays a forward/backward pass per step and uses 100). The other side of the coin: the
loss at a rate reflects the sum of the rates applied so far, so on a finer ramp the loss starts to fall at
lower rates, and the valley and steepest suggestions move down with it (on diabetes ~5e-4 at 3000 steps); the
divergence point does not.

Pure NumPy: no Optuna, MLflow, plotting or I/O.

References:
    L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, arXiv:1506.01186 (2015),
        §3.3 "How can one estimate reasonable minimum and maximum boundary values?": the LR range test.
    fastai, ``Learner.lr_find`` and its suggestion functions ``minimum``, ``steep`` and ``valley``
        (https://docs.fast.ai/callback.schedule.html): the bias-corrected smoothing (beta 0.98), the stop rule
        (4x the best smoothed loss) and the 'valley' idea.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.core.arrays import Dataset
from pipeline.core.checks import ArgumentError, check_float, check_int
from pipeline.core.models import Model
from pipeline.core.optimizers import Optimizer
from pipeline.core.schedules import _Schedule, exponential_ramp, linear_ramp

MODES: tuple[str, ...] = ("exponential", "linear")
MIN_CURVE_POINTS = 3  # suggest needs a slope on both sides of a point and a decrease to look at


# -------------------------------------------------------------------------------------------------- ramps


def segments_ramp(
    start_lr: float, step_lr: float, iterations_per_value: int, end_lr: float
) -> tuple[_Schedule, int]:
    """The sources' table as a ramp: lr = start_lr, start_lr + step_lr, ..., end_lr, each held for
    ``iterations_per_value`` updates (a staircase of linearly spaced values).

    lr(t) = v_k with k = min(t // iterations_per_value, K - 1) and v_k = start_lr + k * step_lr, where
    K = (end_lr - start_lr) / step_lr + 1 values; total_steps = K * iterations_per_value.

    Args:
        start_lr: first value, > 0.
        step_lr: increment between values, > 0.
        iterations_per_value: updates at each value, int >= 1.
        end_lr: last value, > start_lr and reached exactly: end_lr - start_lr must be a whole number of
            step_lr (up to round-off), otherwise a ValueError says so rather than silently stopping short.

    Returns:
        ``(schedule, total_steps)``, ready for ``range_test(..., ramp=...)``.
    """
    where = "segments_ramp"
    start_lr = check_float(start_lr, "start_lr", where, low=0, low_open=True)
    step_lr = check_float(step_lr, "step_lr", where, low=0, low_open=True)
    iterations_per_value = check_int(iterations_per_value, "iterations_per_value", where, low=1)
    end_lr = check_float(end_lr, "end_lr", where, low=0, low_open=True)
    if not end_lr > start_lr:
        raise ArgumentError("end_lr", where, f"a float > start_lr = {start_lr!r}", end_lr)
    increments = (end_lr - start_lr) / step_lr
    k = round(increments)
    if k < 1 or abs(increments - k) > 1e-9 * max(1.0, increments):
        raise ArgumentError(
            "end_lr",
            where,
            f"start_lr + k * step_lr for a whole k >= 1 (start_lr={start_lr!r}, step_lr={step_lr!r}; "
            f"(end_lr - start_lr) / step_lr = {increments:.6g})",
            end_lr,
        )
    values = np.linspace(start_lr, end_lr, k + 1)  # exact end points; no accumulated round-off
    last = k
    schedule = _Schedule(
        "segments_ramp",
        lambda t, xp: values[xp.minimum(t // iterations_per_value, last)],
        start_lr=start_lr,
        step_lr=step_lr,
        iterations_per_value=iterations_per_value,
        end_lr=end_lr,
    )
    return schedule, (k + 1) * iterations_per_value


# --------------------------------------------------------------------------------------------- range test


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on ndarrays is ambiguous
class RangeTestResult:
    """The curves of one range test, one entry per step run (the stopping step included), read-only.

    ``lrs[t]`` is the rate of update t; ``losses[t]`` the loss measured just before it (so it reflects
    ``lrs[:t]``); ``smoothed[t]`` the bias-corrected moving average of ``losses[:t + 1]``. A non-finite loss
    is recorded as +inf in both (never NaN, which plots and trackers drop). The update of the stopping step is
    not applied.

    ``stop_step`` is the step at which the smoothed loss first exceeded ``stop_factor`` times its best value
    so far, or the loss was not finite (None: the ramp ended first); ``diverged_lr = lrs[stop_step]`` is the
    divergence point (None when the ramp ended).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    stop_step: int | None
    diverged_lr: float | None
    stop_reason: str

    @property
    def diverged(self) -> bool:
        return self.stop_step is not None

    @property
    def steps_run(self) -> int:
        return len(self.lrs)


def _check_ramp(ramp) -> tuple[Callable[[int], float], int]:
    if not (isinstance(ramp, tuple | list) and len(ramp) == 2 and callable(ramp[0])):
        raise ArgumentError("ramp", "range_test", "None or a (schedule, total_steps) pair", ramp)
    return ramp[0], check_int(ramp[1], "ramp[1] (total_steps)", "range_test", low=2)


def range_test(
    model: Model,
    optimizer: Optimizer,
    data: Dataset,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 3000,
    mode: str = "exponential",
    ramp: tuple[Callable[[int], float], int] | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    stop_factor: float = 4.0,
    beta: float = 0.98,
    params: np.ndarray | None = None,
) -> RangeTestResult:
    """Run the LR range test (Smith 2015, §3.3) of ``model`` + ``optimizer`` on ``data.X_train``.

    Step t = 0, 1, ...: lr_t = ramp(t); loss_t, g = loss_and_grad(params, batch_t); then the smoothing

        a_t = beta * a_{t-1} + (1 - beta) * loss_t,  a_{-1} = 0,   smoothed_t = a_t / (1 - beta^(t+1))

    (the division removes the bias of starting the average at 0; beta = 0 is no smoothing); stop if loss_t is
    not finite or smoothed_t > stop_factor * min(smoothed_0..t); else ``optimizer.step(params, g, lr_t)``.
    Losses are assumed >= 0 (all the models' losses are).

    Args:
        model, optimizer: the model and update rule to test; the optimizer is re-initialised here.
        data: the training rows (``X_train``, ``y_train``) are used; the validation rows are not.
        start_lr, end_lr: first and last rate of the built-in ramp, 0 < start_lr < end_lr.
        steps: number of steps (updates) of the built-in ramp, int >= 2. The default is much finer than
            fastai's 100 so that the divergence point lands near the true stability limit (module docstring).
        mode: "exponential" (rates evenly spaced in log: ``schedules.exponential_ramp``; the usual choice)
            or "linear" (``schedules.linear_ramp``, as in Smith 2015).
        ramp: a ``(schedule, total_steps)`` pair, e.g. from :func:`segments_ramp`, used instead of
            start_lr/end_lr/steps/mode. Its rates must be finite, > 0 and non-decreasing.
        batch_size: None = full batch (the whole training set at every step); k = the next k rows of a shuffle
            drawn from ``seed``, reshuffled at each pass over the data (the last batch of a pass may be
            shorter), exactly as ``training.train`` orders them; k >= the number of rows is full batch.
        seed: seeds the initial parameters (when ``params`` is None) and the batch order.
        stop_factor: the divergence threshold, float > 1 (``math.inf``: stop only on a non-finite loss).
        beta: smoothing factor of the moving average, in [0, 1).
        params: initial parameters (copied, never modified); default ``model.init_params(rng)``.

    Returns:
        A :class:`RangeTestResult`. No NumPy warning escapes: overflow is the expected end of the test.
    """
    where = "range_test"
    if not isinstance(data, Dataset):
        raise ArgumentError("data", where, "a pipeline.core.arrays.Dataset", type(data).__name__)
    if ramp is None:
        start_lr = check_float(start_lr, "start_lr", where, low=0, low_open=True)
        end_lr = check_float(end_lr, "end_lr", where, low=0, low_open=True)
        if not start_lr < end_lr:
            raise ArgumentError("end_lr", where, f"a float > start_lr = {start_lr!r}", end_lr)
        steps = check_int(steps, "steps", where, low=2)
        if mode not in MODES:
            raise ArgumentError("mode", where, f"one of {', '.join(map(repr, MODES))}", mode)
        schedule = (exponential_ramp if mode == "exponential" else linear_ramp)(start_lr, end_lr, steps)
        total = steps
    else:
        schedule, total = _check_ramp(ramp)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", where, low=1)
    seed = check_int(seed, "seed", where, low=0)
    stop_factor = check_float(stop_factor, "stop_factor", where, low=1, low_open=True, inf_ok=True)
    beta = check_float(beta, "beta", where, low=0, high=1, high_open=True)

    rng = np.random.default_rng(seed)
    if params is None:
        params = np.array(model.init_params(rng), dtype=np.float64)
    else:
        params = np.array(params, dtype=np.float64)  # a copy: the caller's vector is left alone
        if params.shape != (model.n_params,) or not np.isfinite(params).all():
            raise ArgumentError(
                "params",
                where,
                f"a finite float vector of shape ({model.n_params},)",
                f"shape {params.shape}",
            )
    optimizer.init(params)

    X, y = data.X_train, data.y_train
    n = len(y)
    if batch_size is not None and batch_size >= n:
        batch_size = None
    Xs, ys, position = X, y, n  # mini-batch: the current pass's shuffled rows; position n = reshuffle

    lrs = np.empty(total)
    losses = np.empty(total)
    smoothed = np.empty(total)
    average, beta_power, best, previous_lr = 0.0, 1.0, math.inf, 0.0
    stop_step, reason = None, ""
    t = -1
    # Overflow to inf/NaN is the expected end of a range test; it is detected and reported, so NumPy's
    # warnings about it would only be noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for t in range(total):
            lr = float(schedule(t))
            if not (math.isfinite(lr) and lr > 0.0 and lr >= previous_lr):
                raise ValueError(
                    f"The 'ramp' parameter of range_test must give finite, positive, non-decreasing rates. "
                    f"Got lr={lr!r} at step {t} (previous {previous_lr!r}) instead."
                )
            previous_lr = lrs[t] = lr
            if batch_size is None:
                loss, grad = model.loss_and_grad(params, X, y)
            else:
                if position >= n:
                    order = rng.permutation(n)
                    Xs, ys, position = X[order], y[order], 0
                end = position + batch_size
                loss, grad = model.loss_and_grad(params, Xs[position:end], ys[position:end])
                position = end
            loss = float(loss)
            if not math.isfinite(loss):
                losses[t] = smoothed[t] = math.inf
                stop_step, reason = t, f"non-finite loss ({loss}) at step {t} (lr {lr:.4g})"
                break
            losses[t] = loss
            average = beta * average + (1.0 - beta) * loss
            beta_power *= beta
            smoothed[t] = value = average / (1.0 - beta_power)
            best = min(best, value)
            if value > stop_factor * best:
                stop_step = t
                reason = (
                    f"smoothed loss {value:.4g} > {stop_factor:g} x best {best:.4g} at step {t} (lr {lr:.4g})"
                )
                break
            optimizer.step(params, grad, lr)

    end = t + 1
    if stop_step is None:
        reason = (
            f"ramp ended after {total} steps at lr {lrs[total - 1]:.4g} without divergence (smoothed loss "
            f"stayed <= {stop_factor:g} x best {best:.4g})"
        )
    curves = []
    for curve in (lrs, losses, smoothed):
        curve = curve[:end].copy()
        curve.flags.writeable = False
        curves.append(curve)
    return RangeTestResult(
        *curves,
        stop_step=stop_step,
        diverged_lr=None if stop_step is None else float(lrs[stop_step]),
        stop_reason=reason,
    )


# -------------------------------------------------------------------------------------------- suggestions


@dataclass(frozen=True)
class Suggestions:
    """Rates read off a smoothed range-test curve, and the search range recommended to a tuner.

    steepest: the rate where d(smoothed loss) / d(log lr) is most negative, up to the minimum (fastai's
        ``steep``); the noisiest of the three on mini-batch curves.
    min_over_10: the rate at the minimum of the smoothed loss, divided by 10 (fastai's ``minimum``).
    valley: the middle point of the longest decreasing subsequence of the smoothed loss (fastai's ``valley``).
    lr_at_min: the rate at the minimum of the smoothed loss.
    low, high: the recommended log-uniform search range: ``low = min(valley, min_over_10)``, ``high`` = the
        divergence point when the test diverged, else ``lr_at_min``; always 0 < low < high.
    """

    steepest: float
    min_over_10: float
    valley: float
    lr_at_min: float
    low: float
    high: float


def _longest_decrease(values: np.ndarray) -> list[int]:
    """Indices of a longest strictly decreasing subsequence of ``values``, in order.

    The one that ends first, traced back through the latest possible predecessor at each step (so it hugs the
    end of the descent). Lengths by patience sorting, O(n log n): ``length[i]`` is the length of the longest
    strictly decreasing subsequence ending at i.
    """
    tails: list[float] = []  # tails[k]: the smallest -value that ends a decreasing run of length k + 1
    length = np.empty(len(values), dtype=np.intp)
    for i, v in enumerate(-values):
        k = bisect.bisect_left(tails, v)
        length[i] = k + 1
        if k == len(tails):
            tails.append(v)
        else:
            tails[k] = v
    end = int(np.argmax(length))  # the first index reaching the maximum length
    chain = [end]
    for j in range(end - 1, -1, -1):
        if length[j] == length[chain[-1]] - 1 and values[j] > values[chain[-1]]:
            chain.append(j)
    return chain[::-1]


def suggest_from_curve(lrs, smoothed, *, diverged_lr: float | None = None) -> Suggestions:
    """The suggestions of :func:`suggest` for a hand-made curve of rates ``lrs`` and smoothed losses.

    ``lrs`` must be finite, > 0 and non-decreasing. Points from the first non-finite smoothed value on are
    dropped; a run of equal rates (a held value, :func:`segments_ramp`) counts as one point, its last smoothed
    value. With x = log(lr), s the smoothed loss and m = argmin s (the first minimum on ties):

    - min_over_10 = lrs[m] / 10 (fastai's ``minimum``);
    - steepest = lr at argmin of ds/dx over the points 0..m, by ``np.gradient`` (central differences, second
      order also on uneven spacing, one-sided at the ends), so a symmetric drop gives its centre. fastai's
      ``steep`` uses forward differences over the whole curve; stopping at the minimum keeps a ragged
      stretch past it (mini-batch noise at large rates) from winning;
    - valley = the middle point, ``chain[(L - 1) // 2]``, of a longest strictly decreasing subsequence
      ``chain`` (length L) of s: fastai's ``valley``, which finds the same subsequence and takes a point about
      halfway along it (index ``end - L/2``). A subsequence rather than a contiguous run, because the moving
      average of mini-batch losses still has small upticks: with contiguous runs the valley jumped over
      five decades from one seed to the next in our runs, with the subsequence it stays within a factor 3.
      On a strictly decreasing stretch it is the middle of the stretch;
    - low = min(valley, min_over_10): the most cautious of the two robust suggestions. steepest is left out
      because it is the derivative of a noisy curve (it moved over three decades between seeds on mini-batch
      runs), and there is no further /10 because the valley already sits where the loss starts to fall;
    - high = ``diverged_lr`` when given (the rate at which the test blew up: the largest worth trying), else
      lrs[m]. As min_over_10 = lrs[m] / 10 <= high / 10, always low < high.

    Raises:
        ValueError: bad arrays, fewer than 3 usable points, or a smoothed loss lowest at the first point (no
            rate to suggest: start the ramp lower).
    """
    where = "suggest_from_curve"
    lrs = np.asarray(lrs, dtype=np.float64)
    smoothed = np.asarray(smoothed, dtype=np.float64)
    if lrs.ndim != 1 or smoothed.shape != lrs.shape:
        raise ArgumentError(
            "smoothed", where, f"a 1-D array of the shape of lrs {lrs.shape}", f"shape {smoothed.shape}"
        )
    if not (np.isfinite(lrs).all() and (lrs > 0).all() and (np.diff(lrs) >= 0).all()):
        raise ArgumentError("lrs", where, "finite, > 0 and non-decreasing", lrs)
    bad = np.flatnonzero(~np.isfinite(smoothed))
    if bad.size:
        lrs, smoothed = lrs[: bad[0]], smoothed[: bad[0]]
    last_of_run = np.append(lrs[1:] != lrs[:-1], True)
    lrs, smoothed = lrs[last_of_run], smoothed[last_of_run]
    if len(lrs) < MIN_CURVE_POINTS:
        raise ValueError(
            f"The curve is too short to suggest a learning rate: {len(lrs)} distinct rate(s) with a finite "
            f"smoothed loss, at least {MIN_CURVE_POINTS} needed. Start the ramp lower or use more steps."
        )
    m = int(np.argmin(smoothed))
    if m == 0:
        raise ValueError(
            f"The smoothed loss is lowest at the first rate {lrs[0]:.4g}: no learning rate to suggest. Start "
            "the ramp lower, or check the model and data."
        )
    lr_at_min = float(lrs[m])
    slope = np.gradient(smoothed[: m + 1], np.log(lrs[: m + 1]))
    steepest = float(lrs[np.argmin(slope)])
    chain = _longest_decrease(smoothed)
    valley = float(lrs[chain[(len(chain) - 1) // 2]])
    if diverged_lr is None:
        high = lr_at_min
    else:
        high = check_float(diverged_lr, "diverged_lr", where, low=0, low_open=True)
        if high < lr_at_min:
            raise ArgumentError(
                "diverged_lr", where, f"a float >= the rate at the minimum {lr_at_min!r}", diverged_lr
            )
    return Suggestions(
        steepest=steepest,
        min_over_10=lr_at_min / 10,
        valley=valley,
        lr_at_min=lr_at_min,
        low=min(valley, lr_at_min / 10),
        high=high,
    )


def suggest(result: RangeTestResult, *, skip_start: int | None = None) -> Suggestions:
    """Suggested rates and search range from a range test (rules: :func:`suggest_from_curve`).

    The recommended range is ``low = min(valley, min_over_10)`` and ``high`` = the divergence point
    ``result.diverged_lr`` when the test diverged, else the rate at the minimum of the smoothed loss.

    Args:
        result: a :class:`RangeTestResult`.
        skip_start: leading steps left out, int >= 0; default a tenth of the steps run, as fastai does: the
            moving average of the first few (mini-batch) losses is mostly noise, and nothing is learnt at the
            smallest rates anyway.

    Raises:
        ValueError: the curve is too short, or its smoothed loss is lowest at its first point.
    """
    if not isinstance(result, RangeTestResult):
        raise ArgumentError("result", "suggest", "a RangeTestResult", type(result).__name__)
    if skip_start is None:
        skip_start = result.steps_run // 10
    skip_start = check_int(skip_start, "skip_start", "suggest", low=0)
    try:
        return suggest_from_curve(
            result.lrs[skip_start:], result.smoothed[skip_start:], diverged_lr=result.diverged_lr
        )
    except ValueError as exc:
        raise ValueError(f"{exc} (range test: {result.steps_run} steps, {result.stop_reason})") from None


# ------------------------------------------------------------------------------------------- theory check


def least_squares_bound(X, *, intercept: bool = True) -> float:
    """The largest rate at which full-batch gradient descent on least squares converges: 2 / lambda_max.

    For L(w, b) = mean((X w + b - y)^2) the Hessian is constant: H = (2/n) A^T A with A = [X, 1]
    (A = X without intercept). Gradient descent multiplies the error along each eigenvector of H by
    (1 - lr lambda), so it converges from every start iff |1 - lr lambda_max| < 1, i.e. lr < 2 / lambda_max,
    and diverges above. The target y does not enter. Example: x = [1, 2, 3, 4] gives H = [[15, 5], [5, 2]],
    lambda_max = (17 + sqrt(269)) / 2 and 2 / lambda_max = 4 / (17 + sqrt(269)) = 0.1198.

    Args:
        X: features, shape (n, d), or (n,) for one feature; finite.
        intercept: whether the model has the bias b (``models.LinearRegression`` does).
    """
    where = "least_squares_bound"
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1 or not np.isfinite(X).all():
        raise ArgumentError("X", where, "a finite (n, d) or (n,) array with n, d >= 1", f"shape {X.shape}")
    A = np.hstack([X, np.ones((X.shape[0], 1))]) if intercept else X
    lam_max = float(np.linalg.eigvalsh(2.0 / X.shape[0] * (A.T @ A))[-1])
    if not lam_max > 0:
        raise ValueError(
            f"least_squares_bound: X is all zeros (lambda_max = {lam_max}), so every rate converges. "
            "Got an all-zero X instead."
        )
    return 2.0 / lam_max
