"""JAX and NumPyro, or an ImportError naming the extra that brings them. Importing JAX draws from NumPy's global
RNG; its state is put back, so that ``import pyebm.numpyro`` changes no global state."""

import numpy as np

_state = np.random.get_state()
try:
    import jax  # noqa: F401
    import numpyro  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised by a test that hides jax
    raise ImportError(
        "pyebm.numpyro needs JAX and NumPyro, which are an optional extra: pip install 'pyro-ebm[numpyro]'"
    ) from err
finally:
    np.random.set_state(_state)
