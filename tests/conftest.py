"""Test configuration: 64-bit mode so float64 checks (finite differences, exact identities) are possible.

Cells default to float32 parameters regardless; tests that want float64 pass
``dtype=jnp.float64`` explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)
