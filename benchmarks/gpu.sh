#!/usr/bin/env bash
# The GPU checks of issue #17 in one go, on a fresh CUDA machine (about 5 minutes after the installs):
#   1. install rnnjax with its [bench] extra; jax[cuda12] (cuda13 if that fails) at the installed jax's version
#      when JAX sees no GPU; PyTorch's CUDA wheel at the installed version when the installed torch is CPU-only;
#   2. correctness: rnnjax.unroll_batch(..., method="cudnn") against the scan on the GPU (values and gradients,
#      ragged lengths with a zero, reverse, an initial carry; float32 at "highest" matmul precision, and at the
#      default one for information); prints the max relative differences, exits 1 past the tolerance;
#   3. benchmarks/train_step.py's run() on the LSTM shapes only, rows rnnjax, rnnjax-autodiff, rnnjax-cudnn,
#      Flax and torch (cuDNN), written to benchmarks/results/train_step_gpu.{md,json} (the device is named
#      in both), and the check to benchmarks/results/cudnn_check_gpu.json.
#
# Usage: bash benchmarks/gpu.sh [--dry-run] [--no-install] [--repeats N] [--out DIR]
#   --dry-run     on any machine (CPU): no installs, tiny shapes, output to a temporary folder; the backend check
#                 is stubbed and cuDNN's call replaced by JAX's pure-JAX reference (rnnjax._cudnn.reference_lstm),
#                 so every Python line of the GPU run executes and a typo cannot wait for a GPU to show up.
#   --no-install  skip step 1 (the environment is ready).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
INSTALL=1
REPEATS=10
OUT=benchmarks/results
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; INSTALL=0; shift ;;
    --no-install) INSTALL=0; shift ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $DRY_RUN == 1 && $OUT == benchmarks/results ]]; then
  OUT=$(mktemp -d -t rnnjax-gpu-dry-XXXXXX)
fi
PY=${PYTHON:-$(command -v python3 || command -v python)}
# The repository's rnnjax is importable without an install (--no-install on a prepared image, e.g. one whose
# jax, flax, optax, chex and torch are already there and that cannot reach a package index).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# ------------------------------------------------------------------------------------------ 1. install
if [[ $INSTALL == 1 ]]; then
  echo "== install"
  $PY -m pip install -q -e ".[bench]"
  JAX_VERSION=$($PY -c "import jax; print(jax.__version__)")
  if ! $PY -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
    echo "JAX sees no GPU: installing jax[cuda12]==$JAX_VERSION"
    $PY -m pip install -q "jax[cuda12]==$JAX_VERSION" || {
      echo "jax[cuda12] failed; trying jax[cuda13]==$JAX_VERSION"
      $PY -m pip install -q "jax[cuda13]==$JAX_VERSION"
    }
  fi
  TORCH_VERSION=$($PY -c "import torch; print(torch.__version__)" 2>/dev/null || echo none)
  if [[ $TORCH_VERSION == *+cpu* ]]; then
    # PyPI's Linux wheel of the same version is the CUDA build; --no-deps first so a failed download leaves
    # the CPU build in place, then a plain install adds the CUDA libraries it needs.
    echo "torch $TORCH_VERSION is CPU-only: installing PyPI's torch==${TORCH_VERSION%%+*} (CUDA)"
    if $PY -m pip install -q --force-reinstall --no-deps "torch==${TORCH_VERSION%%+*}"; then
      $PY -m pip install -q "torch==${TORCH_VERSION%%+*}" || echo "warning: torch's CUDA libraries did not install"
    else
      echo "warning: could not install a CUDA torch; the torch rows will be left out"
    fi
  fi
fi
$PY - <<'PY'
import importlib.metadata as md

found = []
for name in ["jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "torch"]:
    try:
        found.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
print("installed:", ", ".join(found))
import jax
print("jax backend:", jax.default_backend(), [d.device_kind for d in jax.devices()])
try:
    import torch
    print("torch cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except ImportError:
    print("torch: not installed")
PY
if [[ $DRY_RUN == 0 ]] && ! $PY -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "gpu.sh: JAX has no GPU backend here; nothing to measure (use --dry-run to check the script on CPU)" >&2
  exit 1
fi

# ---------------------------------------------------------------------------- 2. check, 3. benchmark
mkdir -p "$OUT"
RNNJAX_GPU_DRY_RUN=$DRY_RUN RNNJAX_GPU_OUT=$OUT RNNJAX_GPU_REPEATS=$REPEATS $PY - <<'PY'
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax

DRY = os.environ["RNNJAX_GPU_DRY_RUN"] == "1"
OUT = os.environ["RNNJAX_GPU_OUT"]
REPEATS = int(os.environ["RNNJAX_GPU_REPEATS"])
TOL = 1e-4  # max relative difference at "highest" precision (cuDNN's FMA math against XLA's float32)

if DRY:
    # Run the GPU-only branches on CPU: the backend looks like a GPU and cuDNN's call is JAX's reference.
    from jax.experimental import rnn as jrnn

    from rnnjax import _cudnn

    _cudnn._backend_reason = lambda: None
    jrnn.lstm = _cudnn.reference_lstm
    jax.default_backend = lambda: "gpu"
    print("== dry run: backend check stubbed, cuDNN replaced by jax.experimental.rnn.lstm_ref, output in", OUT)


def rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))


# ------------------------------------------------------------------------------------------ check
print("== correctness: unroll_batch(method='cudnn') against the scan")
B, T, I, H = (8, 40, 16, 32) if not DRY else (3, 6, 2, 3)
cell = rnnjax.lstm(I, H, recurrent_bias=True, dtype=jnp.float32)
k = jax.random.split(jax.random.key(0), 6)
params = cell.init(k[0])
params = params._replace(b=params.b + 0.3 * jax.random.normal(k[1], params.b.shape),
                         b_rec=0.3 * jax.random.normal(k[2], params.b.shape))
xs = jax.random.normal(k[3], (B, T, I), jnp.float32)
carry = rnnjax.LSTMState(*(0.5 * jax.random.normal(kk, (B, H), jnp.float32) for kk in jax.random.split(k[4])))
lengths = jnp.asarray(np.resize([0, T, 1, T // 2, T - 1, 3], B), jnp.int32)
r_y, r_h, r_c = (jax.random.normal(kk, s, jnp.float32) for kk, s in zip(jax.random.split(k[5], 3),
                                                                       [(B, T, H), (B, H), (B, H)]))


def make(method, reverse):
    def loss(params, xs, carry, lengths):
        kw = {"method": "cudnn"} if method == "cudnn" else {"backward": "autodiff"}
        final, ys = rnnjax.unroll_batch(cell, params, xs, carry, lengths=lengths, reverse=reverse, **kw)
        return jnp.sum(ys * r_y) + jnp.sum(final.h * r_h) + jnp.sum(final.c * r_c), (final, ys)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


check = {"shape": [B, T, I, H], "lengths": np.asarray(lengths).tolist(), "tolerance": TOL, "cases": []}
failed = False
with warnings.catch_warnings():
    warnings.simplefilter("error", rnnjax.CudnnFallbackWarning)  # a fallback here is a failure
    for precision in ("highest", "default"):
        for reverse in (False, True):
            with jax.default_matmul_precision(precision):
                f_cudnn, f_scan = make("cudnn", reverse), make("scan", reverse)
                if not DRY:
                    hlo = f_cudnn.lower(params, xs, carry, lengths).as_text()
                    assert "cudnn_rnn" in hlo, "the compiled program has no cuDNN RNN custom call"
                got, want = f_cudnn(params, xs, carry, lengths), f_scan(params, xs, carry, lengths)
            (_, (fin_g, ys_g)), grads_g = got
            (_, (fin_w, ys_w)), grads_w = want
            diffs = {"ys": rel(ys_g, ys_w), "h_n": rel(fin_g.h, fin_w.h), "c_n": rel(fin_g.c, fin_w.c)}
            names = ["grad w_in", "grad w_rec", "grad b", "grad b_rec", "grad xs", "grad h0", "grad c0"]
            diffs.update({n: rel(a, b) for n, a, b in zip(names, jax.tree.leaves(grads_g), jax.tree.leaves(grads_w))})
            worst = max(diffs.values())
            ok = precision != "highest" or worst <= TOL
            failed |= not ok
            check["cases"].append({"precision": precision, "reverse": reverse, "max_rel_diff": diffs, "ok": ok})
            print(f"precision={precision:8s} reverse={reverse!s:5s} max rel diff {worst:.2e} "
                  f"({max(diffs, key=diffs.get)}){'' if ok else '  FAIL > %g' % TOL}")
check["device"] = jax.devices()[0].device_kind
with open(os.path.join(OUT, "cudnn_check_gpu.json"), "w") as fh:
    json.dump(check, fh, indent=2)
if failed:
    sys.exit("cuDNN path disagrees with the scan beyond the tolerance; see cudnn_check_gpu.json")

# -------------------------------------------------------------------------------------- benchmark
print("== benchmark: benchmarks/train_step.py, LSTM shapes")
sys.path.insert(0, "benchmarks")
import common  # noqa: E402
import train_step  # noqa: E402

shapes = (("lstm", 64, 512, 256, 256), ("lstm", 256, 50, 64, 256)) if not DRY else (("lstm", 2, 5, 3, 4),)
try:
    import torch

    use_torch = DRY or torch.cuda.is_available()
except ImportError:
    use_torch = False
settings = common.apply_settings(allocator="tuned", host_devices=None)
config = dataclasses.replace(train_step.Config(), shapes=shapes, quick_shapes=shapes, gpu_shapes=(),
                             repeats=REPEATS if not DRY else 2, warmup=2 if not DRY else 1, torch=use_torch)
with tempfile.TemporaryDirectory() as tmp:
    payload = train_step.run(config, False, tmp, settings, ["bash", "benchmarks/gpu.sh", "--no-install"])
    for ext in ("json", "md"):
        shutil.move(os.path.join(tmp, f"train_step.{ext}"), os.path.join(OUT, f"train_step_gpu.{ext}"))
labels = {r["impl"] for r in payload["results"]}
assert "rnnjax-cudnn" in labels, f"no rnnjax-cudnn row: {sorted(labels)}"
print(open(os.path.join(OUT, "train_step_gpu.md")).read())
print("written:", *(os.path.join(OUT, n) for n in ("train_step_gpu.md", "train_step_gpu.json", "cudnn_check_gpu.json")))
PY
