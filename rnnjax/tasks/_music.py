"""Polyphonic music: Bach chorales from music21's bundled corpus as piano rolls (no download).

The 371 four-part chorales of ``music21.corpus.chorales.Iterator()`` (Riemenschneider
numbering; the ``music21`` wheel ships them as MusicXML) are read note by note
(``score.flatten().notes``: every pitch of every part, with its absolute offset and
length in quarter notes) and sampled on a fixed grid of ``quarter_length`` quarter
notes: frame ``k`` has pitch ``m`` on when a note of pitch ``m`` sounds at time
``k * quarter_length`` (``onset <= t < onset + duration``). Rows are the MIDI
pitches of the corpus range (lowest to highest pitch in the loaded pieces).

Parsing takes about 0.2 s per chorale, so the notes are cached: in memory once per
process, and on disk in ``$RNNJAX_CACHE_DIR`` (default ``$XDG_CACHE_HOME/rnnjax`` or
``~/.cache/rnnjax``) under a name keyed by the music21 version and the number of
pieces (``chorales-music21-<version>-n<count>-v1.npz``); the grid is applied to the
cached notes, so every ``quarter_length`` shares one cache.

References:
  Boulanger-Lewandowski, Bengio & Vincent, "Modeling temporal dependencies in
  high-dimensional sequences: application to polyphonic music generation and
  transcription", ICML 2012 (the JSB Chorales piano rolls and their NLL per time step).
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._synthetic import check_positive_int

SPLIT_SEED = 0  # numpy.random.default_rng seed of the fixed split by piece
_CACHE_VERSION = 1
_MUSIC21_MISSING = ('task "chorales" needs music21 (its corpus ships the Bach chorales); install it with: '
                    'pip install "rnnjax[data]"  (or: pip install music21)')


def cache_dir() -> str:
    """Where parsed corpora are cached: ``$RNNJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnjax``, else
    ``~/.cache/rnnjax``."""
    if os.environ.get("RNNJAX_CACHE_DIR"):
        return os.environ["RNNJAX_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rnnjax")


def _music21():
    try:
        import music21
    except ModuleNotFoundError as err:
        if err.name != "music21":
            raise
        raise ModuleNotFoundError(_MUSIC21_MISSING, name="music21") from None
    return music21


def score_notes(score) -> tuple[np.ndarray, float]:
    """``(notes (n, 3) float64 [midi, onset, end], highest_time)`` of a music21 stream, in quarter notes.

    Every pitch of every note and chord in ``score.flatten().notes`` (unpitched
    elements skipped); offsets are absolute (from the start of the score).
    """
    rows = []
    for element in score.flatten().notes:
        pitches = getattr(element, "pitches", ())
        onset = float(element.offset)
        end = onset + float(element.quarterLength)
        rows.extend((float(p.midi), onset, end) for p in pitches)
    notes = np.asarray(rows, np.float64).reshape(-1, 3)
    return notes, float(score.highestTime)


def piano_roll(notes: np.ndarray, highest_time: float, low: int, n_pitches: int,
               quarter_length: float = 1.0) -> np.ndarray:
    """Sample notes on a grid: ``(ceil(highest_time / q), n_pitches)`` float32 0/1.

    ``roll[k, m - low] = 1`` iff a note of MIDI pitch m sounds at ``t = k q``:
    ``onset <= k q < end``.
    """
    eps = 1e-9
    frames = int(math.ceil(highest_time / quarter_length - eps))
    roll = np.zeros((frames, n_pitches), np.float32)
    for midi, onset, end in notes:
        k0 = int(math.ceil(onset / quarter_length - eps))
        k1 = int(math.ceil(end / quarter_length - eps))
        if k1 > k0:
            roll[k0:min(k1, frames), int(midi) - low] = 1.0
    return roll


def roll_to_stream(roll: np.ndarray, low: int, quarter_length: float = 1.0):
    """A music21 ``Score`` (one piano part) playing ``roll (frames, P)``: each run of ones is one note.

    Pitch row ``j`` is MIDI pitch ``low + j``; a run of r frames starting at frame k is
    a note at offset ``k q`` lasting ``r q`` quarter notes.
    """
    music21 = _music21()
    roll = np.asarray(roll) > 0.5
    part = music21.stream.Part()
    part.insert(0, music21.instrument.Piano())
    frames = roll.shape[0]
    for j in range(roll.shape[1]):
        k = 0
        while k < frames:
            if roll[k, j]:
                r = k
                while r < frames and roll[r, j]:
                    r += 1
                n = music21.note.Note(midi=low + j, quarterLength=(r - k) * quarter_length)
                part.insert(k * quarter_length, n)
                k = r
            else:
                k += 1
    if frames:
        part.insert(frames * quarter_length, music21.note.Rest(quarterLength=0))  # keep the full length
    score = music21.stream.Score()
    score.insert(0, part)
    return score


def write_midi(roll: np.ndarray, path: str, low: int, quarter_length: float = 1.0) -> str:
    """Write ``roll (frames, P)`` as a MIDI file (``roll_to_stream(...).write("midi")``); return ``path``."""
    roll_to_stream(roll, low, quarter_length).write("midi", fp=path)
    return path


def plot_roll(roll: np.ndarray, path: str, low: int, quarter_length: float = 1.0, title: str = "") -> str:
    """Save a piano-roll PNG of ``roll (frames, P)``: time (quarter notes) across, MIDI pitch up; return ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roll = np.asarray(roll)
    fig, ax = plt.subplots(figsize=(max(4.0, roll.shape[0] / 12), 3.5))
    extent = (0, roll.shape[0] * quarter_length, low - 0.5, low + roll.shape[1] - 0.5)
    ax.imshow(roll.T, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest", extent=extent)
    ax.set_xlabel("time (quarter notes)")
    ax.set_ylabel("MIDI pitch")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _parse_corpus(count: int | None):
    music21 = _music21()
    names = list(music21.corpus.chorales.Iterator(returnType="filename"))
    names = names if count is None else names[:count]
    pieces = [score_notes(music21.corpus.parse(name)) for name in names]
    return names, pieces


@functools.cache
def load_chorales(max_pieces: int | None = None, cache: bool = True):
    """``(names, [(notes (n, 3), highest_time)])`` of the first ``max_pieces`` chorales (None: all 371).

    Memoised per process; with ``cache`` also read from / written to the disk cache
    (``cache_dir()``), keyed by the music21 version and the count. A full cache serves
    any ``max_pieces``.
    """
    music21 = _music21()
    version = music21.__version__

    def path(tag):
        return os.path.join(cache_dir(), f"chorales-music21-{version}-n{tag}-v{_CACHE_VERSION}.npz")

    candidates = [path("all")] + ([path(max_pieces)] if max_pieces is not None else [])
    if cache:
        for p in candidates:
            if os.path.exists(p):
                with np.load(p, allow_pickle=False) as d:
                    names = [str(n) for n in d["names"]]
                    bounds, notes, times = d["bounds"], d["notes"], d["times"]
                pieces = [(notes[bounds[i]:bounds[i + 1]], float(times[i])) for i in range(len(names))]
                keep = len(names) if max_pieces is None else max_pieces
                return names[:keep], pieces[:keep]
    names, pieces = _parse_corpus(max_pieces)
    if cache:
        try:
            os.makedirs(cache_dir(), exist_ok=True)
            target = candidates[-1] if max_pieces is not None else candidates[0]
            tmp = f"{target}.{os.getpid()}.tmp.npz"
            bounds = np.cumsum([0] + [len(n) for n, _ in pieces])
            np.savez(tmp, names=np.asarray(names), bounds=bounds,
                     notes=np.concatenate([n for n, _ in pieces]) if pieces else np.zeros((0, 3)),
                     times=np.asarray([t for _, t in pieces]))
            os.replace(tmp, target)
        except OSError:
            pass  # a read-only cache directory only costs the parse next time
    return names, pieces


def marginal_nll(p: np.ndarray, frames: np.ndarray) -> float:
    """Mean over frames of ``-sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)]`` (nats per frame)."""
    y = np.asarray(frames, np.float64)
    p = np.asarray(p, np.float64)
    return float(-np.mean(y @ np.log(p) + (1 - y) @ np.log1p(-p)))


def chorales(seq_len: int | None = None, seed: int = 0, *, quarter_length: float = 1.0,
             max_pieces: int | None = None, val_fraction: float = 0.2, test_fraction: float = 0.2,
             cache: bool = True) -> Task:
    """Next-frame prediction on Bach chorale piano rolls (many-to-many, Bernoulli NLL per frame).

    The chorales (see the module docstring) become piano rolls ``(L_i, P)`` over the
    corpus' pitch range (P = 53 MIDI pitches, 36..88, for all 371 pieces). Input step t is frame
    t, target frame t + 1, so a piece of L frames gives L - 1 steps. The split is **by piece**, fixed (``default_rng(0)`` permutation, the same
    for every ``seed``): ``test_fraction`` (74 of 371) test, ``val_fraction`` (74)
    validation, the rest (223) training. ``sample`` draws training pieces uniformly
    and a random crop of ``seq_len`` steps (shorter pieces padded, ``input_lengths``
    set); ``eval_batch`` is every test piece whole, padded and masked. Loss ``"bce"``:
    the NLL of a frame summed over pitches, averaged over the valid frames — the
    "NLL per time step" of the JSB Chorales literature.

    Baseline (``baseline_loss``): independent pitch marginals from the training
    targets, ``p_k = (n_k + 1/2) / (N + 1)`` (``n_k`` frames with pitch k on out of
    N; Krichevsky–Trofimov smoothing keeps unseen pitches finite), scored on the
    test frames: ``-mean_t sum_k [y_tk log p_k + (1 - y_tk) log(1 - p_k)]``.

    Args:
      seq_len: T, training crop in steps (default 64).
      seed: unused (the split is fixed); accepted for a uniform interface.
      quarter_length: grid step in quarter notes (1.0 = quarter notes, as JSB Chorales; 0.5 = eighths).
      max_pieces: use only the first N chorales (fast tests); None = all 371.
      val_fraction, test_fraction: shares of the pieces, each in (0, 0.5).
      cache: read/write the parsed notes in the disk cache.

    Returns:
      A ``Task``: ``inputs (B, T, P)``, ``targets (B, T, P)`` float32 0/1, ``input_lengths (B,)``;
      ``info["write_midi"](roll, path)`` and ``info["plot_roll"](roll, path)`` render a roll.
    """
    del seed
    T = check_positive_int("seq_len", 64 if seq_len is None else seq_len)
    if not (isinstance(quarter_length, (int, float)) and not isinstance(quarter_length, bool)
            and math.isfinite(quarter_length) and quarter_length > 0):
        raise ValueError(f"quarter_length: expected a positive number of quarter notes, got {quarter_length!r}")
    if max_pieces is not None:
        max_pieces = check_positive_int("max_pieces", max_pieces, 5)
    for arg, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 0.5):
            raise ValueError(f"{arg}: expected a number in (0, 0.5), got {value!r}")
    names, pieces = load_chorales(max_pieces, bool(cache))
    allnotes = np.concatenate([n for n, _ in pieces])
    low, high = int(allnotes[:, 0].min()), int(allnotes[:, 0].max())
    P = high - low + 1
    rolls = [piano_roll(n, t, low, P, float(quarter_length)) for n, t in pieces]
    n = len(rolls)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test, n_val = max(1, int(round(test_fraction * n))), max(1, int(round(val_fraction * n)))
    split = {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test:n_test + n_val]),
             "train": np.sort(perm[n_test + n_val:])}

    def whole(idx):
        steps = np.asarray([len(rolls[i]) - 1 for i in idx])
        pad = np.zeros((len(idx), max(int(steps.max()), 1) + 1, P), np.float32)
        for row, i in enumerate(idx):
            pad[row, :len(rolls[i])] = rolls[i]
        valid = (np.arange(pad.shape[1] - 1)[None, :] < steps[:, None])[..., None]  # zero the padded steps
        return Batch(jnp.asarray(pad[:, :-1] * valid), jnp.asarray(pad[:, 1:]), jnp.asarray(steps, jnp.int32), None)

    test, val = whole(split["test"]), whole(split["val"])
    train_steps = np.asarray([len(rolls[i]) - 1 for i in split["train"]])
    padded = np.zeros((len(split["train"]), int(train_steps.max()) + T + 1, P), np.float32)
    for row, i in enumerate(split["train"]):
        padded[row, :len(rolls[i])] = rolls[i]
    padded_d, steps_d = jnp.asarray(padded), jnp.asarray(train_steps, jnp.int32)
    n_train = len(split["train"])

    def sample(key: jax.Array, batch_size: int) -> Batch:
        k_piece, k_start = jax.random.split(key)
        idx = jax.random.randint(k_piece, (batch_size,), 0, n_train, dtype=jnp.int32)
        steps = steps_d[idx]
        room = jnp.maximum(steps - T, 0) + 1  # crop starts 0..max(L - 1 - T, 0)
        start = jnp.floor(jax.random.uniform(k_start, (batch_size,)) * room).astype(jnp.int32)
        crop = jax.vmap(lambda i, s: jax.lax.dynamic_slice(padded_d[i], (s, jnp.zeros_like(s)), (T + 1, P)))(idx, start)
        lengths = jnp.minimum(steps - start, T).astype(jnp.int32)
        valid = (jnp.arange(T)[None, :] < lengths[:, None])[..., None].astype(crop.dtype)  # zero the padded steps
        return Batch(crop[:, :T] * valid, crop[:, 1:] * valid, lengths, None)

    sample = jax.jit(sample, static_argnums=1)
    train_frames = np.concatenate([rolls[i][1:] for i in split["train"]])
    test_frames = np.concatenate([rolls[i][1:] for i in split["test"]])
    p = (train_frames.sum(0, dtype=np.float64) + 0.5) / (len(train_frames) + 1.0)
    q = float(quarter_length)
    return Task(
        name="chorales",
        pattern="many_to_many",
        input_size=P,
        output_size=P,
        loss="bce",
        sample=sample,
        eval_batch=lambda: test,
        baseline_loss=marginal_nll(p, test_frames),
        info={"seq_len": T, "quarter_length": q, "pitch_low": low, "pitch_high": high, "n_pitches": P,
              "pieces": names, "split": {k: [names[i] for i in v] for k, v in split.items()}, "split_index": split,
              "rolls": rolls, "marginal": p, "val_baseline": marginal_nll(p, np.concatenate(
                  [rolls[i][1:] for i in split["val"]])), "val_batch": lambda: val,
              "train_frames": int(len(train_frames)), "test_frames": int(len(test_frames)),
              "write_midi": lambda roll, path: write_midi(roll, path, low, q),
              "plot_roll": lambda roll, path, title="": plot_roll(roll, path, low, q, title),
              "baseline": "independent pitch marginals of the training frames (KT-smoothed), NLL per test frame",
              "source": "music21.corpus.chorales.Iterator() (music21 " + _music21().__version__ + ")"},
    )


__all__ = ["cache_dir", "chorales", "load_chorales", "marginal_nll", "piano_roll", "plot_roll", "roll_to_stream",
           "score_notes", "write_midi"]
