"""rnnjax: recurrent neural networks as pure JAX functions.

A cell is a ``Cell(init, initial_carry, step)`` of pure functions;
``rnnjax.unroll`` runs it over time with ``jax.lax.scan``; ``jax.grad`` of that
is backpropagation through time.
"""

from rnnjax import bptt, gradflow, initializers, interop, tasks
from rnnjax._cells import (
    ACTIVATIONS,
    Cell,
    ElmanParams,
    GRUParams,
    LSTMParams,
    LSTMState,
    elman,
    gru,
    irnn,
    lstm,
    torch_init,
)
from rnnjax._layers import (
    BidirectionalParams,
    Layer,
    Linear,
    LinearParams,
    bidirectional,
    layer,
    linear,
    sequential,
    stack,
)
from rnnjax._deer import DeerInfo
from rnnjax._modern import LRUParams, MinGRUParams, MinLSTMParams, lru, lru_eigenvalues, mingru, minlstm
from rnnjax._registry import CELLS, make_cell
from rnnjax._unroll import unroll, unroll_batch

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BidirectionalParams",
    "CELLS",
    "Cell",
    "ElmanParams",
    "GRUParams",
    "DeerInfo",
    "LRUParams",
    "LSTMParams",
    "MinGRUParams",
    "MinLSTMParams",
    "LSTMState",
    "Layer",
    "Linear",
    "LinearParams",
    "bidirectional",
    "bptt",
    "gradflow",
    "elman",
    "gru",
    "initializers",
    "interop",
    "irnn",
    "layer",
    "linear",
    "lru",
    "lru_eigenvalues",
    "lstm",
    "mingru",
    "minlstm",
    "make_cell",
    "sequential",
    "stack",
    "tasks",
    "torch_init",
    "unroll",
    "unroll_batch",
]
