"""Test configuration: 64-bit mode so float64 checks (finite differences, exact identities) are possible.

Cells created without a ``dtype`` follow JAX's default float dtype, so in this
suite they are float64; tests that need float32 (PyTorch comparisons, overflow
behaviour) pass ``dtype=jnp.float32`` explicitly. Subprocesses started by the
tests run in JAX's default 32-bit mode unless they set ``JAX_ENABLE_X64``.

One persistent compilation cache serves the whole session: the pytest process
(or xdist's controller) creates a fresh directory and exports it as
``JAX_COMPILATION_CACHE_DIR`` before the workers start, so the xdist workers and
every ``rnnjax`` subprocess a test starts (resumes, kills, the two-process lock
test) load a program another process compiled instead of compiling it again.
A loaded executable is the compiled one, so results stay bitwise the same (the
resume and sweep tests compare bits). A directory the user exported is used
as given and kept.
"""

import logging
import os
import shutil
import tempfile

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnjax-test-jax-cache-")
    os.environ["RNNJAX_TEST_CACHE_OWNER"] = str(os.getpid())
# Cache what takes noticeable time to compile; eager one-op programs are cheaper to rebuild than to store.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
# The suite's programs are tiny (a few units, a few steps): LLVM's optimisation of the generated CPU code is
# most of their cost, and running them unoptimised changes their speed, not their IEEE arithmetic (XLA:CPU
# compiles without fast-math either way). Measured on a GRU seq2seq `rnnjax train` of one step: 27 s of CPU
# at the default level, 17 s at level 0. Subprocesses inherit the flag. RNNJAX_TEST_XLA_OPT=default keeps
# XLA's default level (e.g. to check a failure there).
if os.environ.get("RNNJAX_TEST_XLA_OPT", "0") != "default" and "xla_backend_optimization_level" not in \
        os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                      "--xla_backend_optimization_level=0"]))

import jax  # noqa: E402  (after the environment above: JAX reads it when its config is created)
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
    """The process that created the session's compilation cache removes it (not the xdist workers)."""
    if os.environ.get("RNNJAX_TEST_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_configure(config):
    """Under ``-n N`` (xdist's default ``--dist load``) send each test module to one worker (``--dist loadscope``).

    With ``load``, a worker receives tests of several modules interleaved, and pytest tears a module-scoped
    fixture down whenever the next test belongs to another module: the expensive ones (test_distributed's
    4-device subprocess, the CLI runs of test_study, test_sweep, test_runs) were built two or three times.
    With ``loadscope`` each module runs on one worker, its module fixtures once.
    """
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadscope"


@pytest.fixture
def compiled_programs(caplog):
    """``compiled_programs(fn) -> (fn(), names)``: the names of the programs XLA compiled while ``fn`` ran.

    Read from JAX's own compilation log (``jax_log_compiles``), e.g. ``"jit(sweep_init)"``; a program loaded
    from the session's persistent compilation cache is logged too.
    """

    def run(fn):
        caplog.clear()
        jax.config.update("jax_log_compiles", True)
        try:
            with caplog.at_level(logging.WARNING, logger="jax"):
                out = fn()
        finally:
            jax.config.update("jax_log_compiles", False)
        marker = "Finished XLA compilation of "
        names = [r.getMessage().split(marker)[1].split(" in ")[0] for r in caplog.records if marker in r.getMessage()]
        return out, names

    return run
