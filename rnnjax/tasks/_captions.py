"""Captioning: from an 8x8 digit image generate its English name, letter by letter (one-to-many).

The image is scikit-learn's ``load_digits`` digit as a 64-vector (pixels 0..16 scaled
to [0, 1]); its caption is the digit's name spelled out and closed by an end token,
``7 -> s e v e n <end>``. Tokens: ``0 = <end>``, then the 15 letters of the ten names
in alphabetical order (V = 16); captions are 4–6 tokens, padded with ``<end>`` and
masked by ``target_lengths``. The model (``rnnjax.models.one_to_many`` with
``teacher_forcing=True``, chosen by ``for_task`` from ``info["teacher_forcing"]``)
maps the image to its initial state, reads it at every step together with the
previous token (teacher forcing in training), and decodes greedily in evaluation.

References:
  Vinyals, Toshev, Bengio & Erhan, "Show and tell: a neural image caption generator", CVPR 2015.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._datasets import _load_digits

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
END = "<end>"
VOCAB = (END,) + tuple(sorted(set("".join(NAMES))))
MAX_LEN = max(len(n) for n in NAMES) + 1  # letters + <end>
SPLIT_SEED = 0  # the digits task's split: numpy.random.default_rng(0) permutation


def encode_caption(text: str) -> list[int]:
    """Token ids of a spelled caption, with the end token: ``"two" -> [t, w, o, 0]``."""
    try:
        return [VOCAB.index(ch) for ch in text] + [0]
    except ValueError:
        raise ValueError(f"text: expected letters of {VOCAB[1:]}, got {text!r}") from None


def decode_caption(tokens) -> str:
    """The text of token ids up to (not including) the first end token."""
    out = []
    for t in np.asarray(tokens).tolist():
        if t == 0:
            break
        out.append(VOCAB[t])
    return "".join(out)


def caption_arrays(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(targets (N, MAX_LEN) int32 padded with 0, lengths (N,) int32)`` of the captions of digit ``labels``."""
    table = np.zeros((10, MAX_LEN), np.int32)
    lens = np.zeros(10, np.int32)
    for d, name in enumerate(NAMES):
        ids = encode_caption(name)
        table[d, :len(ids)] = ids
        lens[d] = len(ids)
    return table[labels], lens[labels]


def caption_scores(predicted: np.ndarray, targets: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """``{"exact", "token"}`` accuracy of predicted token ids ``(N, L)`` on the valid steps of ``targets (N, L)``."""
    valid = np.arange(targets.shape[1])[None, :] < np.asarray(lengths)[:, None]
    right = (np.asarray(predicted) == np.asarray(targets)) | ~valid
    return {"exact": float(np.mean(np.all(right, axis=1))),
            "token": float(np.sum((np.asarray(predicted) == targets) & valid) / np.sum(valid))}


def prefix_model(train_targets: np.ndarray, train_lengths: np.ndarray) -> dict[tuple, np.ndarray]:
    """The image-free language model of the training captions: ``{prefix: p(next token | prefix) (V,)}``.

    Counted over the valid steps of the training captions (maximum likelihood; a
    deterministic caption grammar leaves no unseen prefix of a test caption).
    """
    counts: dict[tuple, np.ndarray] = {}
    for row, n in zip(train_targets, train_lengths):
        for t in range(int(n)):
            counts.setdefault(tuple(row[:t].tolist()), np.zeros(len(VOCAB)))[row[t]] += 1
    return {k: v / v.sum() for k, v in counts.items()}


@functools.cache
def _captions_data(test_fraction: float):
    from sklearn.linear_model import LogisticRegression

    x, y = _load_digits()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    tr_t, tr_l = caption_arrays(y[train])
    te_t, te_l = caption_arrays(y[test])
    lm = prefix_model(tr_t, tr_l)
    nll = [-np.log(lm[tuple(row[:t].tolist())][row[t]]) for row, n in zip(te_t, te_l) for t in range(int(n))]
    greedy = []  # the image-free greedy decoding (one caption for every image)
    prefix: tuple = ()
    while len(greedy) < MAX_LEN:
        tok = int(np.argmax(lm[prefix])) if prefix in lm else 0
        greedy.append(tok)
        prefix = prefix + (tok,)
    greedy = np.asarray(greedy)
    mode = int(np.bincount(y[train], minlength=10).argmax())
    clf = LogisticRegression(max_iter=5000).fit(x[train], y[train])
    baselines = {
        "prefix_lm_xent": float(np.mean(nll)),
        "most_frequent_caption": {"caption": NAMES[mode],
                                  **caption_scores(caption_arrays(np.full(len(test), mode))[0], te_t, te_l)},
        "image_free_greedy": {"caption": decode_caption(greedy),
                              **caption_scores(np.broadcast_to(greedy, te_t.shape), te_t, te_l)},
        "logistic_regression_then_name": caption_scores(caption_arrays(clf.predict(x[test]))[0], te_t, te_l),
    }
    return x[train], y[train], tr_t, tr_l, x[test], y[test], te_t, te_l, baselines, train, test


def captions(seq_len: int | None = None, seed: int = 0, *, test_fraction: float = 0.2) -> Task:
    """Caption a digit image with its spelled-out name (one-to-many, token cross-entropy).

    Data: scikit-learn's 1797 digits, split as the ``digits`` task (fixed
    ``default_rng(0)`` permutation, the same for every ``seed``; 1438 training / 359
    test images by default). ``sample`` draws training images uniformly (with
    replacement); ``eval_batch`` is the whole test split.

    Baseline (``baseline_loss``): the best image-free model, the prefix language
    model of the training captions, ``p(token | previous tokens)`` by counting,
    scored with teacher forcing on the test captions (mean nats per token).
    ``info["baselines"]`` also holds exact-caption and token accuracies of the most
    frequent training caption, of the image-free greedy decoding, and of a
    non-recurrent reference: logistic regression on the 64 pixels, then the
    predicted digit's name.

    Args:
      seq_len: must be None or 6 (the longest caption with its end token).
      seed: unused (the split is fixed); accepted for a uniform interface.
      test_fraction: share of the images held out, in (0, 1).

    Returns:
      A ``Task`` with pattern ``"one_to_many"``: ``inputs (B, 64)`` float32, ``targets (B, 6)``
      int32 in ``[0, 16)``, ``target_lengths (B,)``; ``info["decode"]`` turns ids into text.
    """
    del seed
    if seq_len not in (None, MAX_LEN):
        raise ValueError(f"seq_len: captions have {MAX_LEN} steps (the longest name and <end>), got {seq_len!r}")
    if not (isinstance(test_fraction, (int, float)) and not isinstance(test_fraction, bool) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    x_tr, y_tr, t_tr, l_tr, x_te, y_te, t_te, l_te, baselines, train, test = _captions_data(float(test_fraction))
    xs, ts, ls = jnp.asarray(x_tr), jnp.asarray(t_tr), jnp.asarray(l_tr)
    test_batch = Batch(jnp.asarray(x_te), jnp.asarray(t_te), None, jnp.asarray(l_te))
    n_train = len(x_tr)

    def sample(key: jax.Array, batch_size: int) -> Batch:
        idx = jax.random.randint(key, (batch_size,), 0, n_train)
        return Batch(xs[idx], ts[idx], None, ls[idx])

    sample = jax.jit(sample, static_argnums=1)
    return Task(
        name="captions",
        pattern="one_to_many",
        input_size=64,
        output_size=len(VOCAB),
        loss="xent",
        sample=sample,
        eval_batch=lambda: test_batch,
        baseline_loss=baselines["prefix_lm_xent"],
        info={"seq_len": MAX_LEN, "vocab": VOCAB, "teacher_forcing": True, "baselines": baselines,
              "decode": decode_caption, "encode": encode_caption, "names": NAMES,
              "train_index": train, "test_index": test, "train_labels": y_tr, "test_labels": y_te,
              "train_batch": lambda: Batch(xs, ts, None, ls),
              "baseline": "image-free prefix LM of the training captions (nats per token, teacher forcing)",
              "source": "sklearn.datasets.load_digits"},
    )


__all__ = ["VOCAB", "caption_arrays", "caption_scores", "captions", "decode_caption", "encode_caption",
           "prefix_model"]
