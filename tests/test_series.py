"""Forecasting tasks on statsmodels' series: split, normalisation, windows, baselines, a training smoke."""

import jax
import numpy as np
import pytest

pytest.importorskip("statsmodels")

import statsmodels.api as sm  # noqa: E402
from statsmodels.tsa.ar_model import AutoReg  # noqa: E402

from rnnjax.tasks import get_task  # noqa: E402


@pytest.fixture(scope="module")
def sun():
    return get_task("sunspots")


@pytest.fixture(scope="module")
def sun3():
    return get_task("sunspots", horizon=3, ar_lags=9)


def test_series_are_the_statsmodels_data():
    x = get_task("sunspots").info["values"]
    np.testing.assert_array_equal(x, sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy())
    e = get_task("elnino").info["values"]
    table = sm.datasets.elnino.load_pandas().data
    assert e.shape == (732,)
    assert e[0] == table["JAN"].iloc[0] and e[13] == table["FEB"].iloc[1] and e[-1] == table["DEC"].iloc[-1]


def test_chronological_split_and_train_only_normalisation(sun):
    info = sun.info
    x = info["values"]
    (a, b), (c, d), (e, f) = info["split"]["train"], info["split"]["val"], info["split"]["test"]
    assert (a, b, c, d, e, f) == (0, 217, 217, 263, 263, 309)  # 70 / 15 / 15 %, in time order
    assert info["mean"] == pytest.approx(np.mean(x[:217])) and info["std"] == pytest.approx(np.std(x[:217]))
    assert abs(info["mean"] - np.mean(x)) > 1.0  # the full series would give another normalisation
    np.testing.assert_allclose(info["normalised"], (x - np.mean(x[:217])) / np.std(x[:217]))
    np.testing.assert_allclose(info["denormalise"](info["normalised"]), x)


@pytest.mark.parametrize("fixture", ["sun", "sun3"])
def test_windows_and_no_training_batch_touches_the_test_part(fixture, request):
    task = request.getfixturevalue(fixture)
    info = task.info
    z, T, H = info["normalised"], info["seq_len"], info["horizon"]
    n_train, test_start = info["split"]["train"][1], info["split"]["test"][0]
    # every training window, built by a Python loop over origins whose targets lie in the training part
    train = {tuple(np.float32(z[o - T:o + H])) for o in range(T, n_train - H + 1)}
    test = [np.float32(z[o - T:o + H]) for o in range(test_start, len(z) - H + 1)]
    ev = task.eval_batch()
    got = np.concatenate([np.asarray(ev.inputs)[..., 0], np.asarray(ev.targets).reshape(len(test), H)], 1)
    np.testing.assert_array_equal(got, np.stack(test))
    seen = set()
    for k in range(20):
        b = task.sample(jax.random.key(k), 64)
        rows = np.concatenate([np.asarray(b.inputs)[..., 0], np.asarray(b.targets).reshape(64, H)], 1)
        for r in rows:
            assert tuple(r) in train
            seen.add(tuple(r))
    assert len(seen) > 0.8 * len(train)  # the sampler covers the training windows
    # the last value any training row reads is before the validation part (so before the test part)
    assert max(o + H for o in range(T, n_train - H + 1)) == n_train


def test_baselines_against_python_loops_and_statsmodels(sun, sun3):
    for task in (sun, sun3):
        info = task.info
        z, H, s = info["normalised"], info["horizon"], info["season"]
        origins = info["origins"]["test"]
        err = {"persistence": [], "seasonal_naive": [], "mean": []}
        for o in origins:
            for h in range(H):
                y = z[o + h]
                err["persistence"].append((z[o - 1] - y) ** 2)
                back = o + h - s
                while back >= o:
                    back -= s
                err["seasonal_naive"].append((z[back] - y) ** 2)
                err["mean"].append(y ** 2)
        for name, values in err.items():
            assert info["baselines"][name] == pytest.approx(np.mean(values), rel=1e-12)
        assert task.baseline_loss == info["baselines"]["persistence"]
        # AR: the coefficients of AutoReg fitted on the training part, forecasts as statsmodels predicts them
        p = info["ar_lags"]
        fit = AutoReg(z[:info["split"]["train"][1]], lags=p, trend="c").fit()
        np.testing.assert_allclose(info["ar_params"], fit.params, rtol=1e-10)
        full = fit.apply(z)
        ar = info["baseline_forecasts"]["ar"]
        for row, o in enumerate(origins[:10]):
            want = full.predict(start=o, end=o + H - 1, dynamic=True)  # from o on, its own forecasts
            np.testing.assert_allclose(ar[row], want, rtol=1e-9, atol=1e-12)
    assert sun3.info["ar_lags"] == 9
    assert sun.info["baselines"]["ar"] < sun.baseline_loss  # AR(p) beats persistence on sunspots


def test_patterns_shapes_and_options(sun, sun3):
    assert sun.pattern == "many_to_one" and sun3.pattern == "seq2seq"
    b = sun.sample(jax.random.key(0), 5)
    assert b.inputs.shape == (5, 22, 1) and b.targets.shape == (5, 1)
    b = sun3.sample(jax.random.key(0), 5)
    assert b.inputs.shape == (5, 22, 1) and b.targets.shape == (5, 3, 1)
    assert sun3.eval_batch().targets.shape == (46 - 3 + 1, 3, 1)
    np.testing.assert_array_equal(sun.sample(jax.random.key(3), 8).inputs, sun.sample(jax.random.key(3), 8).inputs)
    with pytest.raises(ValueError, match="seq_len: expected at least the season"):
        get_task("sunspots", seq_len=8)
    with pytest.raises(ValueError, match="horizon"):
        get_task("elnino", horizon=0)
    with pytest.raises(ValueError, match="ar_lags: expected at most seq_len"):
        get_task("elnino", ar_lags=30)
    with pytest.raises(ValueError, match="test_fraction"):
        get_task("sunspots", test_fraction=0.6)


def test_a_gru_beats_persistence_on_elnino():
    from rnnjax.train import RunConfig, build, run_key

    trainer = build(RunConfig(task="elnino", cell="gru", hidden=16, steps=200, lr=1e-2, batch_size=32))
    state, _ = jax.jit(trainer.run, static_argnums=1)(trainer.init(run_key(0)), 200)
    loss = float(trainer.evaluate(state.params)["loss"])
    assert loss < trainer.task.baseline_loss
