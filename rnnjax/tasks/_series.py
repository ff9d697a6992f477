"""Forecasting real time series shipped inside statsmodels (no download).

- ``sunspots``: yearly mean sunspot numbers 1700–2008 (309 values,
  ``statsmodels.api.datasets.sunspots``), the ~11-year solar cycle (season s = 11).
- ``elnino``: monthly sea-surface temperatures of the El Niño region 1950–2010
  (61 years × 12 months = 732 values, ``statsmodels.api.datasets.elnino``), season s = 12.

The series is cut **chronologically** into train / validation / test parts and
normalised with the mean and standard deviation of the training part only,
``z_t = (x_t - mean_train) / std_train``. A window of ``T = seq_len`` values
``z[o - T : o]`` forecasts ``z[o : o + H]`` (``H = horizon``); a window belongs to the
part that holds its *first target* ``o`` and all ``H`` targets lie in that part
(its inputs may reach back into the previous part: that is past data, known at the
forecast origin). ``H = 1`` is a ``many_to_one`` task (one-step forecast with a
rolling window); ``H > 1`` a ``seq2seq`` task (an encoder reads the window, a
decoder rolls out the H values, feeding back its own predictions when evaluated).

Baselines on exactly the test windows (MSE in normalised units, mean over windows
and horizons): persistence ``z^_{o+h} = z_{o-1}`` (``Task.baseline_loss``),
seasonal naive ``z^_{o+h} = z_{o+h-s(floor(h/s)+1)}``, the training mean (0), and an
autoregressive model ``AR(p)`` (``statsmodels.tsa.ar_model.AutoReg``, constant
term, OLS) fitted on the training part, its forecasts rolled out recursively from
each origin with the fitted coefficients. Every baseline reads only the window.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._synthetic import check_positive_int

_SEASONS = {"sunspots": 11, "elnino": 12}
_DEFAULT_T = {"sunspots": 22, "elnino": 24}
_STATSMODELS_MISSING = ('task {name!r} needs statsmodels (its bundled data sets and AutoReg); install it with: '
                        'pip install "rnnjax[data]"  (or: pip install statsmodels)')


@functools.cache
def load_series(name: str) -> np.ndarray:
    """The raw series ``(N,)`` float64 of ``"sunspots"`` or ``"elnino"``, read from the statsmodels wheel.

    sunspots: column ``SUNACTIVITY`` (years 1700–2008); elnino: the 12 monthly
    columns of each year, year after year (January 1950 – December 2010).
    A read-only array, read once per process.
    """
    try:
        import statsmodels.api as sm
    except ModuleNotFoundError as err:
        if err.name != "statsmodels":
            raise
        raise ModuleNotFoundError(_STATSMODELS_MISSING.format(name=name), name="statsmodels") from None
    if name == "sunspots":
        values = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)
    elif name == "elnino":
        values = sm.datasets.elnino.load_pandas().data.drop(columns="YEAR").to_numpy(np.float64).reshape(-1)
    else:
        raise ValueError(f"name: expected 'sunspots' or 'elnino', got {name!r}")
    values = values.copy()
    values.flags.writeable = False
    return values


def fit_ar(z_train: np.ndarray, lags: int | None, max_lag: int) -> np.ndarray:
    """``AR(p)`` coefficients ``[c, phi_1, ..., phi_p]`` fitted by statsmodels' ``AutoReg`` (OLS, constant).

    ``lags=None`` picks p in ``1..max_lag`` by AIC (``ar_select_order``); the model is
    ``z_t = c + sum_i phi_i z_{t-i} + e_t``.
    """
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    if lags is None:
        chosen = ar_select_order(z_train, maxlag=max_lag, ic="aic", trend="c").ar_lags
        lags = max(chosen) if chosen else 1
    return np.asarray(AutoReg(z_train, lags=lags, trend="c").fit().params, np.float64)


def baseline_forecasts(z: np.ndarray, origins: np.ndarray, horizon: int, season: int,
                       ar_params: np.ndarray) -> dict[str, np.ndarray]:
    """Forecasts ``(len(origins), horizon)`` of the naive baselines and the AR model from each origin ``o``.

    ``persistence``: ``z[o - 1]``; ``seasonal_naive``: ``z[o + h - s (h // s + 1)]``;
    ``mean``: 0 (the training mean); ``ar``: the AR recursion
    ``z^_{o+h} = c + sum_i phi_i z~_{o+h-i}`` with ``z~`` the data before ``o`` and the
    forecasts after it.
    """
    z = np.asarray(z, np.float64)
    origins = np.asarray(origins)
    h = np.arange(horizon)
    persistence = np.repeat(z[origins - 1][:, None], horizon, axis=1)
    seasonal = z[origins[:, None] + h[None, :] - season * (h[None, :] // season + 1)]
    c, phi = ar_params[0], ar_params[1:]
    p = len(phi)
    ar = np.empty((len(origins), horizon))
    for row, o in enumerate(origins):
        hist = list(z[o - p:o])
        for j in range(horizon):
            nxt = c + float(np.dot(phi, hist[::-1]))
            ar[row, j] = nxt
            hist = hist[1:] + [nxt]
    return {"persistence": persistence, "seasonal_naive": seasonal, "mean": np.zeros_like(persistence), "ar": ar}


def _windows(z, origins, T, H):
    idx = origins[:, None] + np.arange(-T, H)[None, :]
    w = z[idx].astype(np.float32)
    return w[:, :T, None], w[:, T:, None]


def _series_task(name, seq_len, horizon, val_fraction, test_fraction, ar_lags) -> Task:
    season = _SEASONS[name]
    T = check_positive_int("seq_len", _DEFAULT_T[name] if seq_len is None else seq_len)
    H = check_positive_int("horizon", horizon)
    if T < season:
        raise ValueError(f"seq_len: expected at least the season s={season} (the seasonal-naive baseline reads "
                         f"z[t - s] from the window), got {T}")
    for arg, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 0.5):
            raise ValueError(f"{arg}: expected a number in (0, 0.5), got {value!r}")
    if ar_lags is not None:
        ar_lags = check_positive_int("ar_lags", ar_lags)
        if ar_lags > T:
            raise ValueError(f"ar_lags: expected at most seq_len={T} (the AR model reads only the window), "
                             f"got {ar_lags}")
    x = load_series(name)
    n = len(x)
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    n_train = n - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    if n_train < T + H + 1 or min(n_val, n_test) < H:
        raise ValueError(f"seq_len, horizon: T={T} + H={H} do not fit the {name} split "
                         f"({n_train}/{n_val}/{n_test} values)")
    mean, std = float(np.mean(x[:n_train])), float(np.std(x[:n_train]))
    z = (x - mean) / std
    origins = {part: np.arange(max(lo, T), hi - H + 1) for part, (lo, hi) in bounds.items()}
    ar_params = fit_ar(z[:n_train], ar_lags, T)
    x_train, y_train = (jnp.asarray(a) for a in _windows(z, origins["train"], T, H))
    test = Batch(*(jnp.asarray(a) for a in _windows(z, origins["test"], T, H)))
    val = Batch(*(jnp.asarray(a) for a in _windows(z, origins["val"], T, H)))
    if H == 1:  # many_to_one: targets (B, 1)
        y_train, test, val = y_train[:, 0], Batch(test.inputs, test.targets[:, 0]), Batch(val.inputs, val.targets[:, 0])
    n_windows = x_train.shape[0]

    def sample(key: jax.Array, batch_size: int) -> Batch:
        idx = jax.random.randint(key, (batch_size,), 0, n_windows)
        return Batch(x_train[idx], y_train[idx])

    sample = jax.jit(sample, static_argnums=1)
    forecasts = {part: baseline_forecasts(z, origins[part], H, season, ar_params) for part in ("val", "test")}
    target = {part: z[origins[part][:, None] + np.arange(H)[None, :]] for part in ("val", "test")}
    scores = {part: {k: float(np.mean((f - target[part]) ** 2)) for k, f in forecasts[part].items()}
              for part in ("val", "test")}
    return Task(
        name=name,
        pattern="many_to_one" if H == 1 else "seq2seq",
        input_size=1,
        output_size=1,
        loss="mse",
        sample=sample,
        eval_batch=lambda: test,
        baseline_loss=scores["test"]["persistence"],
        info={"seq_len": T, "horizon": H, "season": season, "mean": mean, "std": std, "split": bounds,
              "origins": origins, "values": x, "normalised": z, "ar_params": ar_params, "ar_lags": len(ar_params) - 1,
              "baselines": scores["test"], "val_baselines": scores["val"], "baseline_forecasts": forecasts["test"],
              "val_batch": lambda: val, "train_batch": lambda: Batch(x_train, y_train),
              "denormalise": lambda v: np.asarray(v) * std + mean,
              "baseline": "persistence z_{o-1} on the test windows (MSE in units of the training std)",
              "source": f"statsmodels.api.datasets.{name}"},
    )


def sunspots(seq_len: int | None = None, seed: int = 0, *, horizon: int = 1, val_fraction: float = 0.15,
             test_fraction: float = 0.15, ar_lags: int | None = None) -> Task:
    """Forecast the yearly sunspot numbers (1700–2008, 309 values; statsmodels' ``sunspots``).

    Chronological split (default 217 / 46 / 46 years: test 1963–2008), normalised on
    the training years; windows of ``seq_len`` years forecast the next ``horizon``
    years (see the module docstring). ``horizon=1``: ``many_to_one``, targets
    ``(B, 1)``; ``horizon > 1``: ``seq2seq``, targets ``(B, H, 1)``. Baseline loss:
    persistence on the test windows; ``info["baselines"]`` also holds the seasonal
    naive (s = 11 years), mean and AR(p) test MSEs (``info["ar_lags"]`` = p).

    Args:
      seq_len: T, the window (default 22 = two cycles; at least 11).
      seed: unused (the split is chronological); accepted for a uniform interface.
      horizon: H, values forecast from each origin.
      val_fraction, test_fraction: shares of the series (from the end) in the
        validation and test parts, each in (0, 0.5).
      ar_lags: p of the AR baseline, at most T; None: chosen by AIC in 1..T on the training part.

    Returns:
      A ``Task``: ``inputs (B, T, 1)`` float32; ``info["val_batch"]()`` the validation windows.

    References:
      Box, Jenkins & Reinsel, Time Series Analysis (AR models of the sunspot numbers).
    """
    del seed
    return _series_task("sunspots", seq_len, horizon, val_fraction, test_fraction, ar_lags)


def elnino(seq_len: int | None = None, seed: int = 0, *, horizon: int = 1, val_fraction: float = 0.15,
           test_fraction: float = 0.15, ar_lags: int | None = None) -> Task:
    """Forecast monthly El Niño sea-surface temperatures (1950–2010, 732 months; statsmodels' ``elnino``).

    As ``sunspots`` with a season of s = 12 months: chronological split (default
    512 / 110 / 110 months: test March 2001 – December 2010), normalised on the
    training months, windows of ``seq_len`` months forecasting ``horizon`` months.

    Args:
      seq_len: T (default 24 months; at least 12).
      seed: unused (the split is chronological).
      horizon: H (1: ``many_to_one``; > 1: ``seq2seq``).
      val_fraction, test_fraction: shares in the validation and test parts, each in (0, 0.5).
      ar_lags: p of the AR baseline (<= T), or None (AIC).

    Returns:
      A ``Task``: ``inputs (B, T, 1)`` float32, targets ``(B, 1)`` or ``(B, H, 1)``.
    """
    del seed
    return _series_task("elnino", seq_len, horizon, val_fraction, test_fraction, ar_lags)


__all__ = ["baseline_forecasts", "elnino", "fit_ar", "load_series", "sunspots"]
