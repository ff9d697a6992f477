"""rnnjax: recurrent neural networks as pure JAX functions.

A cell is a ``Cell(init, initial_carry, step)`` of pure functions;
``rnnjax.unroll`` runs it over time with ``jax.lax.scan``; ``jax.grad`` of that
is backpropagation through time.
"""

from rnnjax import dynamics, gradflow, initializers, interop, tasks
from rnnjax._cells import (
    ACTIVATIONS,
    Cell,
    ElmanParams,
    GRUParams,
    LSTMParams,
    LSTMState,
    Parametrization,
    elman,
    gru,
    irnn,
    lstm,
    parametrized_cell,
    prepare,
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
from rnnjax._cudnn import CudnnFallbackWarning, cudnn_lstm_weights
from rnnjax._deer import DeerInfo
from rnnjax._longmemory import (
    AntisymmetricParams,
    AntisymmetricWeights,
    CoRNNParams,
    CoRNNState,
    ExpRNNParams,
    ExpRNNWeights,
    IndRNNParams,
    antisymmetric,
    cornn,
    exprnn,
    indrnn,
)
from rnnjax._modern import LRUParams, MinGRUParams, MinLSTMParams, lru, lru_eigenvalues, mingru, minlstm
from rnnjax._registry import CELLS, make_cell, register_cell
from rnnjax._unroll import unroll, unroll_batch
from rnnjax import checkpoint, distributed, models, search, study, sweep, train
from rnnjax.models import Model, many_to_many, many_to_one, one_to_many, seq2seq
from rnnjax.train import Trainer, TrainState, make_optimizer, make_train_step, make_trainer

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "AntisymmetricParams",
    "AntisymmetricWeights",
    "BidirectionalParams",
    "Cell",
    "CELLS",
    "CoRNNParams",
    "CoRNNState",
    "CudnnFallbackWarning",
    "DeerInfo",
    "ElmanParams",
    "ExpRNNParams",
    "ExpRNNWeights",
    "GRUParams",
    "IndRNNParams",
    "Layer",
    "Linear",
    "LinearParams",
    "LRUParams",
    "LSTMParams",
    "LSTMState",
    "MinGRUParams",
    "MinLSTMParams",
    "Model",
    "Parametrization",
    "Trainer",
    "TrainState",
    "antisymmetric",
    "bidirectional",
    "checkpoint",
    "cornn",
    "cudnn_lstm_weights",
    "distributed",
    "dynamics",
    "elman",
    "exprnn",
    "gradflow",
    "gru",
    "indrnn",
    "initializers",
    "interop",
    "irnn",
    "layer",
    "linear",
    "lru",
    "lru_eigenvalues",
    "lstm",
    "make_cell",
    "make_optimizer",
    "make_train_step",
    "make_trainer",
    "many_to_many",
    "many_to_one",
    "mingru",
    "minlstm",
    "models",
    "one_to_many",
    "parametrized_cell",
    "prepare",
    "register_cell",
    "search",
    "seq2seq",
    "sequential",
    "stack",
    "study",
    "sweep",
    "tasks",
    "torch_init",
    "train",
    "unroll",
    "unroll_batch",
]
