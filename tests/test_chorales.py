"""Bach chorales as piano rolls: encoding vs music21, split by piece, padding, baseline, BCE, MIDI, sampling."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

music21 = pytest.importorskip("music21")

import rnnjax  # noqa: E402
from rnnjax import models  # noqa: E402
from rnnjax.tasks import _music  # noqa: E402
from rnnjax.tasks import get_task  # noqa: E402

N_PIECES = 12


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("RNNJAX_CACHE_DIR")
    os.environ["RNNJAX_CACHE_DIR"] = str(cache)
    _music.load_chorales.cache_clear()
    try:
        t = get_task("chorales", seq_len=16, max_pieces=N_PIECES)
        files = os.listdir(cache)
        assert files == [f"chorales-music21-{music21.__version__}-n{N_PIECES}-v1.npz"]
        _music.load_chorales.cache_clear()  # the second build reads the disk cache: the same rolls
        again = get_task("chorales", seq_len=16, max_pieces=N_PIECES)
        for a, b in zip(t.info["rolls"], again.info["rolls"]):
            np.testing.assert_array_equal(a, b)
        yield t
    finally:
        if old is None:
            os.environ.pop("RNNJAX_CACHE_DIR", None)
        else:
            os.environ["RNNJAX_CACHE_DIR"] = old


def _chordify_roll(score, low, n_pitches, q):
    """An independent encoding: the pitches of music21's chordified score sounding at each grid time."""
    flat = score.chordify().flatten().notes
    frames = int(np.ceil(score.highestTime / q - 1e-9))
    roll = np.zeros((frames, n_pitches), np.float32)
    for k in range(frames):
        for el in flat.getElementsByOffset(k * q, mustBeginInSpan=False, includeElementsThatEndAtStart=False):
            if float(el.quarterLength) > 0:
                for p in el.pitches:
                    roll[k, p.midi - low] = 1
    return roll


@pytest.mark.parametrize("q", [1.0, 0.5])
def test_piano_roll_matches_music21_chordify(task, q):
    name = task.info["pieces"][0]
    score = music21.corpus.parse(name)
    low, P = task.info["pitch_low"], task.info["n_pitches"]
    notes, highest = _music.score_notes(score)
    got = _music.piano_roll(notes, highest, low, P, q)
    np.testing.assert_array_equal(got, _chordify_roll(score, low, P, q))
    assert got.sum(1).max() <= 4 + 2 and got.sum() > 0  # four voices (a part may double)
    if q == 1.0:
        np.testing.assert_array_equal(task.info["rolls"][0], got)


def test_split_by_piece_and_no_training_batch_touches_the_test_pieces(task):
    info = task.info
    split = info["split_index"]
    allidx = np.concatenate([split["train"], split["val"], split["test"]])
    assert sorted(allidx.tolist()) == list(range(N_PIECES))  # a partition of the pieces
    rolls = info["rolls"]
    T = info["seq_len"]
    ev = task.eval_batch()
    for row, i in enumerate(split["test"]):  # the evaluation set is every test piece, whole
        L = len(rolls[i])
        assert int(ev.input_lengths[row]) == L - 1
        np.testing.assert_array_equal(ev.inputs[row, :L - 1], rolls[i][:-1])
        np.testing.assert_array_equal(ev.targets[row, :L - 1], rolls[i][1:])
        assert not np.any(np.asarray(ev.inputs[row, L - 1:])) and not np.any(np.asarray(ev.targets[row, L - 1:]))
    train = [rolls[i] for i in split["train"]]
    others = [rolls[i] for i in np.concatenate([split["val"], split["test"]])]

    def find(crop, n, pieces):  # (piece, start) of pieces whose frames [s, s + n] equal the crop
        return [(j, s) for j, r in enumerate(pieces) for s in range(len(r) - n)
                if np.array_equal(r[s:s + n + 1], crop[:n + 1])]

    for k in range(3):
        b = task.sample(jax.random.key(k), 16)
        for x, y, n in zip(np.asarray(b.inputs), np.asarray(b.targets), np.asarray(b.input_lengths)):
            assert 1 <= n <= T
            seq = np.concatenate([x[:n], y[n - 1:n]])  # frames s..s+n
            hits = find(seq, n, train)
            assert hits, "a sampled crop is not a crop of a training piece"
            assert not find(seq, n, others) or len(seq) < 4  # never (a long crop) from a test/val piece
            # padding: inputs/targets are zero beyond the valid steps; the crop is as long as the piece allows
            assert not x[n:].any() and not y[n:].any()
            assert any(n == min(T, len(train[j]) - 1 - s) for j, s in hits)


def test_independent_marginal_baseline_closed_form(task):
    info = task.info
    split, rolls = info["split_index"], info["rolls"]
    frames = [f for i in split["train"] for f in rolls[i][1:]]
    p = [(sum(int(f[k]) for f in frames) + 0.5) / (len(frames) + 1) for k in range(info["n_pitches"])]
    np.testing.assert_allclose(info["marginal"], p, rtol=1e-12)
    total, count = 0.0, 0
    for i in split["test"]:
        for f in rolls[i][1:]:
            total -= sum(np.log(p[k]) if f[k] else np.log(1 - p[k]) for k in range(len(p)))
            count += 1
    assert task.baseline_loss == pytest.approx(total / count, rel=1e-10)
    # the same number from the model's loss: constant logits log(p / (1 - p)) on the padded, masked eval batch
    ev = task.eval_batch()
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(p) / (1 - jnp.asarray(p))), ev.targets.shape)
    mask = models.step_mask(ev.input_lengths, *ev.targets.shape[:2])
    assert float(models.masked_bce(logits, ev.targets, mask)) == pytest.approx(task.baseline_loss, rel=1e-5)


def test_masked_bce_against_a_python_loop():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 5, 4))
    y = (rng.uniform(size=(3, 5, 4)) < 0.3).astype(float)
    lengths = np.array([5, 2, 3])
    total, count = 0.0, 0
    for b in range(3):
        for t in range(lengths[b]):
            for k in range(4):
                s = 1 / (1 + np.exp(-z[b, t, k]))
                total -= y[b, t, k] * np.log(s) + (1 - y[b, t, k]) * np.log(1 - s)
            count += 1
    mask = models.step_mask(jnp.asarray(lengths), 3, 5)
    with jax.enable_x64(True):
        got = models.masked_bce(jnp.asarray(z), jnp.asarray(y), mask)
    assert float(got) == pytest.approx(total / count, rel=1e-10)
    with pytest.raises(ValueError, match="targets: expected 0/1 labels of shape"):
        models.masked_bce(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_midi_round_trip(task, tmp_path):
    roll = task.info["rolls"][1]
    path = task.info["write_midi"](roll, str(tmp_path / "piece.mid"))
    back = music21.converter.parse(path)
    notes, _ = _music.score_notes(back)
    got = _music.piano_roll(notes, max(back.highestTime, len(roll)), task.info["pitch_low"], task.info["n_pitches"])
    np.testing.assert_array_equal(got[:len(roll)], roll)
    assert not got[len(roll):].any()
    png = task.info["plot_roll"](roll, str(tmp_path / "piece.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_generate_bernoulli_is_the_model_fed_its_own_frames(task):
    P = task.input_size
    model = models.many_to_many(rnnjax.gru(P, 8), P, loss="bce")
    params = model.init(jax.random.key(1))
    prime = task.info["rolls"][0][:3]
    frames = np.asarray(models.generate_bernoulli(model, params, jax.random.key(0), prime, 6, temperature=0.0))
    seq = np.concatenate([prime, frames])
    logits = np.asarray(model.apply(params, jnp.asarray(seq[None, :-1])))[0]  # teacher-forced on its own output
    np.testing.assert_array_equal(frames, (logits[2:] > 0).astype(frames.dtype))
    assert frames.shape == (6, P) and set(np.unique(frames)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="model: expected a many_to_many bce model"):
        models.generate_bernoulli(models.many_to_many(rnnjax.gru(P, 8), P, loss="mse"), params, jax.random.key(0),
                                  prime, 2)


def test_a_short_cli_run_beats_the_marginals_and_samples_a_midi_file(task, tmp_path):
    """A GRU trained for 100 steps on the eighth-note grid of the 8 training pieces beats the independent
    marginals of the test pieces; ``rnnjax sample`` then writes a MIDI file that music21 reads back."""
    import json

    from rnnjax.cli import main

    out = str(tmp_path / "run")
    args = ["--task", "chorales", "--cell", "gru", "--hidden", "32", "--steps", "100", "--batch-size", "16",
            "--seq-len", "32", "--lr", "0.01", "--task-option", f"max_pieces={N_PIECES}",
            "--task-option", "quarter_length=0.5"]
    assert main(["train", *args, "--out", out]) == 0
    with open(os.path.join(out, "summary.json")) as f:
        ev = json.load(f)["eval"]
    assert ev["loss"] < ev["baseline_loss"]
    midi = str(tmp_path / "s.mid")
    assert main(["sample", "--out", out, "--length", "10", "--prime-frames", "2", "--midi", midi,
                 "--png", str(tmp_path / "s.png")]) == 0
    back = music21.converter.parse(midi)
    notes, _ = _music.score_notes(back)
    assert len(notes) > 0 and back.highestTime >= 0.5 * 12 - 1e-9  # 12 frames of an eighth note
    assert open(tmp_path / "s.png", "rb").read(4) == b"\x89PNG"
    assert main(["sample", "--out", out, "--prime-frames", "100000"]) == 2  # checked before anything is written


def test_options_are_checked():
    with pytest.raises(ValueError, match="quarter_length"):
        get_task("chorales", quarter_length=0.0, max_pieces=N_PIECES)
    with pytest.raises(ValueError, match="max_pieces"):
        get_task("chorales", max_pieces=2)
