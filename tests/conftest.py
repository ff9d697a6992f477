"""Test configuration: 64-bit mode so float64 checks (finite differences, exact identities) are possible.

Cells created without a ``dtype`` follow JAX's default float dtype, so in this
suite they are float64; tests that need float32 (PyTorch comparisons, overflow
behaviour) pass ``dtype=jnp.float32`` explicitly. Subprocesses started by the
tests run in JAX's default 32-bit mode unless they set ``JAX_ENABLE_X64``.
"""

import jax

jax.config.update("jax_enable_x64", True)
