import pytest

pytest.importorskip("numpyro")


@pytest.fixture
def x64():
    """JAX in float64 for exact comparisons; the flag is restored afterwards."""
    import jax

    old = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)
