"""Word tokens and vocabularies shared by the word-level tasks (``sentiment``, ``wordlm``).

``tokenize`` lower-cases and splits text into words (letters/digits, with one inner apostrophe:
``it's``) and single punctuation marks; ``vocabulary`` counts tokens of a training split only.
"""

from __future__ import annotations

import collections
import re
from typing import Iterable, Sequence

import numpy as np

_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """``"It's good, isn't it?"`` -> ``["it's", "good", ",", "isn't", "it", "?"]`` (lower-cased words and marks)."""
    return _TOKEN.findall(text.lower())


def vocabulary(tokens: Iterable[str], *, max_size: int | None = None, min_count: int = 1,
               specials: Sequence[str] = ()) -> list[str]:
    """The vocabulary of a token stream: ``specials`` first, then words by decreasing count (ties alphabetical).

    Args:
      tokens: the training split's tokens (never the evaluation split's).
      max_size: keep at most this many words (besides ``specials``), or None.
      min_count: keep words seen at least this often.
      specials: reserved entries placed first (``"<pad>"``, ``"<unk>"``).

    Returns:
      The list of entries; entry ``i`` has id ``i``.
    """
    counts = collections.Counter(tokens)
    for s in specials:
        counts.pop(s, None)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[:max_size]
    return list(specials) + words


def encode(tokens: Sequence[str], index: dict, unk: int) -> np.ndarray:
    """Token ids (``index[t]``, or ``unk`` for a token not in the vocabulary) as int32."""
    return np.fromiter((index.get(t, unk) for t in tokens), dtype=np.int32, count=len(tokens))


def detokenize(words: Sequence[str]) -> str:
    """Words joined by spaces, without a space before a punctuation mark or after an opening bracket."""
    out = ""
    for w in words:
        closing = len(w) == 1 and not w.isalnum() and w not in "([{\"'"
        if out and not closing and out[-1] not in "([{":
            out += " "
        out += w
    return out
