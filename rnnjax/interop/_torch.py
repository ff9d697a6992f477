"""Exact import and export of PyTorch ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` weights.

rnnjax cells use PyTorch's weight layout ``(out, in)``, gate order (LSTM i, f,
g, o; GRU r, z, n) and both biases (``b`` = ``bias_ih``, ``b_rec`` =
``bias_hh``), so every tensor is copied unchanged and a round trip torch ->
rnnjax -> torch reproduces the ``state_dict`` bit for bit.

PyTorch is imported only inside these functions: ``import rnnjax`` never
needs it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._cells import Cell, ElmanParams, GRUParams, LSTMParams, LSTMState, elman, gate_functions, gru, lstm
from rnnjax._layers import BidirectionalParams, bidirectional, layer, sequential

_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
_PARAM_TYPES = {"RNN": ElmanParams, "LSTM": LSTMParams, "GRU": GRUParams}


def _import_torch():
    try:
        import torch
    except ImportError as err:  # pragma: no cover - torch is a test dependency
        raise ImportError(
            "rnnjax.interop: this function needs PyTorch (pip install torch); import rnnjax itself does not"
        ) from err
    return torch


class TorchSpec(NamedTuple):
    """The architecture of a PyTorch recurrent module (everything but the weights).

    Attributes:
      mode: ``"RNN"``, ``"LSTM"`` or ``"GRU"``.
      input_size: I.
      hidden_size: H.
      num_layers: L.
      bidirectional: two directions per layer (D = 2) or one (D = 1).
      bias: whether the module has ``bias_ih``/``bias_hh``.
      proj_size: P for an LSTM with projection, else 0.
      nonlinearity: ``"tanh"`` or ``"relu"`` (``nn.RNN`` only; ``"tanh"`` otherwise).
      batch_first: the module's input layout (``fn`` always takes one sequence).
    """

    mode: str
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    bias: bool
    proj_size: int
    nonlinearity: str
    batch_first: bool

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_width(self) -> int:
        """Width of one direction's output (P with a projection, else H)."""
        return self.proj_size or self.hidden_size

    def layer_input(self, k: int) -> int:
        return self.input_size if k == 0 else self.directions * self.output_width


def _spec_of_module(module, name: str = "module") -> TorchSpec:
    torch = _import_torch()
    kinds = {torch.nn.RNN: "RNN", torch.nn.LSTM: "LSTM", torch.nn.GRU: "GRU"}
    mode = next((m for cls, m in kinds.items() if isinstance(module, cls)), None)
    if mode is None:
        raise TypeError(
            f"{name}: expected a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, got {type(module).__module__}."
            f"{type(module).__name__}"
        )
    return TorchSpec(
        mode=mode,
        input_size=int(module.input_size),
        hidden_size=int(module.hidden_size),
        num_layers=int(module.num_layers),
        bidirectional=bool(module.bidirectional),
        bias=bool(module.bias),
        proj_size=int(getattr(module, "proj_size", 0) or 0),
        nonlinearity=getattr(module, "nonlinearity", "tanh") if mode == "RNN" else "tanh",
        batch_first=bool(module.batch_first),
    )


def _make_cell(spec: TorchSpec, k: int, dtype) -> Cell:
    i, h = spec.layer_input(k), spec.hidden_size
    if spec.mode == "RNN":
        return elman(i, h, activation=spec.nonlinearity, recurrent_bias=spec.bias, dtype=dtype)
    if spec.mode == "LSTM":
        return lstm(i, h, forget_bias=0.0, recurrent_bias=spec.bias, proj_size=spec.proj_size or None, dtype=dtype)
    return gru(i, h, dtype=dtype)


def _build_fn(spec: TorchSpec, dtype) -> Callable:
    layers = []
    for k in range(spec.num_layers):
        if spec.bidirectional:
            layers.append(bidirectional(_make_cell(spec, k, dtype), _make_cell(spec, k, dtype)))
        else:
            layers.append(layer(_make_cell(spec, k, dtype)))
    net = sequential(*layers)
    d_, l_ = spec.directions, spec.num_layers
    lstm_mode = spec.mode == "LSTM"
    h_shape = (l_ * d_, spec.output_width)
    c_shape = (l_ * d_, spec.hidden_size)

    def to_carry(state):
        if lstm_mode:
            if not (isinstance(state, (tuple, list)) and len(state) == 2):
                raise ValueError(
                    f"state: expected a pair (h_0 {h_shape}, c_0 {c_shape}) for an LSTM, got {type(state).__name__}"
                )
            h0, c0 = jnp.asarray(state[0]), jnp.asarray(state[1])
            if h0.shape != h_shape or c0.shape != c_shape:
                raise ValueError(f"state: expected (h_0 {h_shape}, c_0 {c_shape}), got ({h0.shape}, {c0.shape})")
            per = [LSTMState(h0[j], c0[j]) for j in range(l_ * d_)]
        else:
            h0 = jnp.asarray(state)
            if h0.shape != h_shape:
                raise ValueError(
                    f"state: expected h_0 of shape {h_shape} (num_layers * directions, hidden), got {h0.shape}"
                )
            per = [h0[j] for j in range(l_ * d_)]
        return tuple(tuple(per[k * d_ : (k + 1) * d_]) if spec.bidirectional else per[k] for k in range(l_))

    def to_state(finals):
        per = []
        for c in finals:
            per.extend(c if spec.bidirectional else (c,))
        if lstm_mode:
            return jnp.stack([c.h for c in per]), jnp.stack([c.c for c in per])
        return jnp.stack(per)

    def fn(params, xs, state=None, *, length=None):
        """Run the converted module over one sequence, as ``module(xs)`` unbatched.

        Args:
          params: the parameters returned by ``from_torch`` (a tuple with one
            entry per layer).
          xs: ``(time, input_size)``, one sequence (batch with ``jax.vmap``).
          state: optional initial state in PyTorch's layout for one sequence:
            ``h_0 (num_layers * D, H_out)``, or ``(h_0, c_0)`` for an LSTM.
          length: optional number of valid steps (a packed/padded sequence):
            outputs after it are zero and the final state is the state after
            step ``length - 1`` (backward directions start at ``length - 1``).

        Returns:
          ``(outputs, final_state)``: ``outputs (time, D * H_out)`` equals
          torch's ``output[b]``; ``final_state`` equals ``h_n[:, b]``, or
          ``(h_n[:, b], c_n[:, b])`` for an LSTM.
        """
        carry = None if state is None else to_carry(state)
        finals, ys = net.apply(params, xs, carry, length=length)
        return ys, to_state(finals)

    return fn


def _to_numpy(tensor) -> np.ndarray:
    torch = _import_torch()
    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: go through float32 (exact)
        return t.to(torch.float32).numpy().astype(jnp.bfloat16)
    return t.numpy().copy()


def _check_dtype_available(dtype, name):
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"{name}: the module holds float64 weights; enable 64-bit JAX first "
            "(jax.config.update('jax_enable_x64', True)) or convert the module with .float()"
        )


def params_from_tensors(spec: TorchSpec, tensors: dict[str, Any]) -> tuple:
    """rnnjax parameters from PyTorch tensors named as in ``module.named_parameters()``.

    Args:
      spec: the module's architecture (``TorchSpec``).
      tensors: ``{"weight_ih_l0": array, ...}`` (arrays or tensors), e.g. a
        module's ``state_dict()`` or the gradients of its parameters.

    Returns:
      A tuple with one entry per layer: ``ElmanParams``, ``LSTMParams`` or
      ``GRUParams``, or ``BidirectionalParams`` of two of them.
    """
    torch = _import_torch()

    def get(name):
        if name not in tensors:
            raise ValueError(f"tensors: missing {name!r} (expected the tensors of a {spec.mode} module)")
        value = tensors[name]
        return jnp.asarray(_to_numpy(value) if isinstance(value, torch.Tensor) else value)

    g, h = _GATES[spec.mode], spec.hidden_size
    layers = []
    for k in range(spec.num_layers):
        dirs = []
        for sfx in ("", "_reverse")[: spec.directions]:
            w_in, w_rec = get(f"weight_ih_l{k}{sfx}"), get(f"weight_hh_l{k}{sfx}")
            if spec.bias:
                b, b_rec = get(f"bias_ih_l{k}{sfx}"), get(f"bias_hh_l{k}{sfx}")
            else:
                b, b_rec = jnp.zeros((g * h,), w_in.dtype), None
            if spec.mode == "RNN":
                p = ElmanParams(w_in, w_rec, b, b_rec)
            elif spec.mode == "LSTM":
                w_proj = get(f"weight_hr_l{k}{sfx}") if spec.proj_size else None
                p = LSTMParams(w_in, w_rec, b, b_rec, w_proj)
            else:
                p = GRUParams(w_in, w_rec, b, jnp.zeros_like(b) if b_rec is None else b_rec)
            dirs.append(p)
        layers.append(BidirectionalParams(*dirs) if spec.bidirectional else dirs[0])
    return tuple(layers)


def from_torch(module) -> tuple[Callable, tuple]:
    """Convert a PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` into a pure function and parameters.

    Every configuration converts exactly: ``nonlinearity`` tanh or relu,
    ``num_layers``, ``bidirectional``, ``bias``, ``proj_size`` (LSTM) and
    either ``batch_first`` (``fn`` takes one sequence, so the layout does not
    matter to it). Layers are rnnjax cells (``elman``, ``lstm``, ``gru``)
    composed with ``rnnjax.sequential`` and ``rnnjax.bidirectional``.

    Args:
      module: a ``torch.nn.RNN``, ``torch.nn.LSTM`` or ``torch.nn.GRU``. In
        training mode with ``dropout > 0`` and ``num_layers > 1`` it is refused
        (PyTorch would apply random dropout between layers): call
        ``module.eval()`` first.

    Returns:
      ``(fn, params)``. ``fn(params, xs, state=None, *, length=None) ->
      (outputs, final_state)`` with ``xs: (time, input_size)``, ``outputs:
      (time, D * H_out)`` equal to torch's ``output[b]`` and ``final_state``
      equal to ``h_n[:, b]`` (``(h_n[:, b], c_n[:, b])`` for an LSTM); ``fn`` is
      pure and jittable. ``params`` is a tuple with one entry per layer
      (``BidirectionalParams(forward, backward)`` for bidirectional layers),
      in the dtype of the module's weights.

    Example:
      >>> fn, params = rnnjax.interop.from_torch(torch.nn.LSTM(3, 8, num_layers=2).double())
      >>> ys, (h_n, c_n) = jax.jit(fn)(params, xs)                 # xs: (time, 3)
      >>> batched = jax.vmap(fn, in_axes=(None, 0))(params, xs_b)  # xs_b: (batch, time, 3)
    """
    spec = _spec_of_module(module)
    if module.training and float(module.dropout) > 0.0 and spec.num_layers > 1:
        raise ValueError(
            f"module: in training mode with dropout={module.dropout} between its {spec.num_layers} layers PyTorch "
            "applies random dropout, which has no exact counterpart; call module.eval() first "
            "(rnnjax.sequential(..., dropout=p) with a key gives dropout on the JAX side)"
        )
    tensors = dict(module.named_parameters())
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1:
        raise ValueError(f"module: expected all weights in one dtype, got {sorted(map(str, dtypes))}")
    (torch_dtype,) = dtypes
    if torch_dtype == _import_torch().float64:  # check before jnp.asarray would silently make it float32
        _check_dtype_available(jnp.float64, "module")
    params = params_from_tensors(spec, tensors)
    return _build_fn(spec, jax.tree.leaves(params)[0].dtype), params


def _layer_type(p):
    for mode, cls in _PARAM_TYPES.items():
        if isinstance(p, cls):
            return mode
    return None


def _spec_of_params(params, nonlinearity: str, batch_first: bool, bias: bool | None) -> tuple[TorchSpec, tuple]:
    if isinstance(params, (ElmanParams, LSTMParams, GRUParams, BidirectionalParams)):
        params = (params,)
    if not isinstance(params, (tuple, list)) or not params:
        raise TypeError(
            "params: expected a tuple with one entry per layer (ElmanParams, LSTMParams, GRUParams or "
            f"BidirectionalParams of them), got {type(params).__name__}"
        )
    params = tuple(params)
    bidir = isinstance(params[0], BidirectionalParams)
    first = params[0].forward if bidir else params[0]
    mode = _layer_type(first)
    if mode is None:
        raise TypeError(f"params[0]: expected ElmanParams, LSTMParams or GRUParams, got {type(first).__name__}")
    g = _GATES[mode]
    w_in = first.w_in
    if w_in.ndim != 2 or w_in.shape[0] % g:
        raise ValueError(f"params[0].w_in: expected shape ({g} * hidden, input), got {tuple(w_in.shape)}")
    h = w_in.shape[0] // g
    proj = 0
    if mode == "LSTM" and first.w_proj is not None:
        proj = int(first.w_proj.shape[0])
    if mode == "RNN" and nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu' (torch.nn.RNN), got {nonlinearity!r}")
    spec = TorchSpec(mode, int(w_in.shape[1]), h, len(params), bidir, True, proj, nonlinearity, bool(batch_first))

    has_bias = False
    out = spec.output_width
    for k, p in enumerate(params):
        if isinstance(p, BidirectionalParams) != bidir:
            raise ValueError(f"params[{k}]: expected {'' if bidir else 'no '}BidirectionalParams, as params[0]")
        if bidir:
            directions = ((p.forward, f"params[{k}].forward"), (p.backward, f"params[{k}].backward"))
        else:
            directions = ((p, f"params[{k}]"),)
        for q, where in directions:
            if _layer_type(q) != mode:
                raise TypeError(
                    f"{where}: expected {_PARAM_TYPES[mode].__name__} (as params[0]), got {type(q).__name__}"
                )
            expect = {
                "w_in": (g * h, spec.layer_input(k)),
                "w_rec": (g * h, out),
                "b": (g * h,),
                "b_rec": (g * h,),
            }
            if mode == "LSTM":
                expect["w_proj"] = (proj, h) if proj else None
            for field, shape in expect.items():
                value = getattr(q, field)
                if value is None:
                    if field == "w_proj" and shape is not None:
                        raise ValueError(f"{where}.w_proj: expected shape {shape} (as params[0]), got None")
                    continue
                if shape is None:
                    raise ValueError(
                        f"{where}.w_proj: expected None (params[0] has no projection), got {tuple(value.shape)}"
                    )
                if tuple(value.shape) != shape:
                    raise ValueError(f"{where}.{field}: expected shape {shape}, got {tuple(value.shape)}")
            if mode != "GRU" and q.b_rec is not None:
                has_bias = True
            if np.any(np.asarray(q.b) != 0) or (q.b_rec is not None and np.any(np.asarray(q.b_rec) != 0)):
                has_bias = True
    if bias is None:
        bias = has_bias
    elif not bias and has_bias:
        raise ValueError("bias: bias=False, but params hold nonzero biases (or a b_rec field)")
    return spec._replace(bias=bool(bias)), params


def _check_torch_functions(cell) -> None:
    """Refuse cells whose gate or activation functions PyTorch's LSTM and GRU cannot represent."""
    cells = (cell,) if isinstance(cell, Cell) else tuple(cell) if isinstance(cell, (tuple, list)) else None
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise TypeError(f"cell: expected an rnnjax.Cell or a sequence of them (one per layer), got {cell!r}")
    for k, c in enumerate(cells):
        functions = gate_functions(c)
        if functions is not None and (functions[0] is not jax.nn.sigmoid or functions[1] is not jnp.tanh):
            where = "cell" if isinstance(cell, Cell) else f"cell[{k}]"
            raise ValueError(
                f"{where}: {c.name!r} uses gate_fn={getattr(functions[0], '__name__', functions[0])}, "
                f"activation_fn={getattr(functions[1], '__name__', functions[1])}; PyTorch's nn.LSTM and nn.GRU "
                "only have sigmoid gates and tanh activations, so these parameters would run a different network "
                "there (Flax's cells take both functions: rnnjax.interop.to_flax)"
            )


def to_torch(
    params,
    module=None,
    *,
    nonlinearity: str = "tanh",
    batch_first: bool = False,
    bias: bool | None = None,
    cell: Cell | tuple | None = None,
):
    """Load rnnjax parameters into a PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

    The reverse of ``from_torch``: ``to_torch(from_torch(m)[1], ...)`` has the
    same ``state_dict`` as ``m``, bit for bit. Parameters of cells built
    without ``recurrent_bias`` load with ``bias_hh = 0``.

    Args:
      params: a tuple with one entry per layer (``ElmanParams``,
        ``LSTMParams`` or ``GRUParams``, or ``BidirectionalParams`` of two),
        or a single such entry. Layer ``k > 0`` reads ``D * H_out`` inputs.
      module: optional torch module to load into (in place); its type and
        sizes must match ``params``. Default: build a new module in the
        parameters' dtype.
      nonlinearity: ``"tanh"`` or ``"relu"`` for a new ``nn.RNN`` (ignored
        when ``module`` is given).
      batch_first: layout of a new module (ignored when ``module`` is given).
      bias: whether a new module has biases; default: ``True`` unless every
        bias is zero and no ``b_rec`` field is set.
      cell: the cell the parameters belong to (or a sequence, one per
        layer); pass it to have export refuse what PyTorch cannot run. The
        parameters alone do not tell which functions the cell applies.

    Returns:
      The torch module holding copies of ``params``.

    Raises:
      ValueError: ``cell`` is an ``rnnjax.lstm``/``rnnjax.gru`` built with a
        ``gate_fn`` other than ``jax.nn.sigmoid`` or an ``activation_fn``
        other than ``jnp.tanh`` (PyTorch has no such options).
    """
    if cell is not None:
        _check_torch_functions(cell)
    torch = _import_torch()
    if module is not None:
        target = _spec_of_module(module)
        nonlinearity, batch_first = target.nonlinearity, target.batch_first
        bias = target.bias if bias is None else bias
    spec, params = _spec_of_params(params, nonlinearity, batch_first, bias)
    np_dtype = np.dtype(jax.tree.leaves(params)[0].dtype)
    torch_dtype = torch.bfloat16 if np_dtype == jnp.bfloat16 else torch.from_numpy(np.zeros(0, np_dtype)).dtype
    if module is None:
        kwargs = dict(
            num_layers=spec.num_layers, bias=spec.bias, batch_first=spec.batch_first, bidirectional=spec.bidirectional
        )
        if spec.mode == "RNN":
            module = torch.nn.RNN(spec.input_size, spec.hidden_size, nonlinearity=spec.nonlinearity, **kwargs)
        elif spec.mode == "LSTM":
            module = torch.nn.LSTM(spec.input_size, spec.hidden_size, proj_size=spec.proj_size, **kwargs)
        else:
            module = torch.nn.GRU(spec.input_size, spec.hidden_size, **kwargs)
        module = module.to(torch_dtype)
    else:  # `target` is the module's spec, read above
        if target != spec:
            diff = {
                f: (getattr(target, f), getattr(spec, f))
                for f in TorchSpec._fields
                if getattr(target, f) != getattr(spec, f)
            }
            raise ValueError(
                "module: does not match params; differing (module, params): "
                + ", ".join(f"{f}={a!r} vs {b!r}" for f, (a, b) in diff.items())
            )

    def put(name, value):
        t = getattr(module, name)
        if value is None:
            src = torch.zeros_like(t)
        else:
            arr = np.asarray(value)
            if arr.dtype == jnp.bfloat16:  # numpy has no bfloat16 for torch: go through float32 (exact)
                src = torch.from_numpy(arr.astype(np.float32)).to(torch.bfloat16)
            else:
                src = torch.from_numpy(arr.copy())
        with torch.no_grad():
            t.copy_(src.to(t.dtype))

    for k, p in enumerate(params):
        for q, sfx in zip((p.forward, p.backward) if spec.bidirectional else (p,), ("", "_reverse")):
            put(f"weight_ih_l{k}{sfx}", q.w_in)
            put(f"weight_hh_l{k}{sfx}", q.w_rec)
            if spec.bias:
                put(f"bias_ih_l{k}{sfx}", q.b)
                put(f"bias_hh_l{k}{sfx}", q.b_rec)
            if spec.mode == "LSTM" and spec.proj_size:
                put(f"weight_hr_l{k}{sfx}", q.w_proj)
    return module
