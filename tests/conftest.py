"""Test configuration: 64-bit mode so float64 checks (finite differences, exact identities) are possible.

Cells created without a ``dtype`` follow JAX's default float dtype, so in this
suite they are float64; tests that need float32 (PyTorch comparisons, overflow
behaviour) pass ``dtype=jnp.float32`` explicitly. Subprocesses started by the
tests run in JAX's default 32-bit mode unless they set ``JAX_ENABLE_X64``.
"""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """Share compiled programs between the in-process runs of one test module (identical runs recompile otherwise).

    Use with ``pytestmark = pytest.mark.usefixtures("compilation_cache")``.
    """
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def pytest_configure(config):
    """Under ``-n N`` (xdist's default ``--dist load``) honour ``xdist_group`` marks (``--dist loadgroup``).

    A module whose tests share an expensive module-scoped fixture (test_distributed's 4-device subprocess)
    marks them ``pytest.mark.xdist_group(...)``, so the fixture runs on one worker, not once per worker.
    Tests without the mark are scheduled as before.
    """
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
