"""The NumPyro front door: MAP and Laplace (BFGS, ``jax.hessian``), SVI and NUTS/HMC, returning ``pyebm.Posterior``.

Everything runs on the model's unconstrained latent vector, with the same conventions as the Pyro backend:
MAP minimises the energy without the Jacobian, Laplace fits at the minimum of the potential with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.infer as ninfer
from jax.flatten_util import ravel_pytree
from jax.scipy.optimize import minimize as jax_minimize
from numpyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal
from numpyro.infer.initialization import init_to_median, init_to_uniform, init_to_value
from numpyro.infer.util import constrain_fn, initialize_model, log_density, potential_energy

from ..diagnostics import InferenceError
from ..infer.mcmc import posterior_from_draws
from ..infer.registry import Method, register, resolve_method
from ..infer.result import Posterior
from ..infer.svi import FULL_RANK_MAX_DIM
from ..state import resolve_seed

__all__ = ["infer", "MAP", "Laplace", "SVI", "NUTS", "HMC", "METHODS"]

#: NumPyro method name -> class
METHODS: dict[str, type] = {}


def infer(model: Callable, *model_args, method, seed: int | None = None, progress: bool = True,
          **model_kwargs) -> Posterior:
    """Run a NumPyro model through a method; the twin of :func:`pyebm.infer` (same names, same Posterior).

    ``method`` may also be a Pyro-side object (``pyebm.NUTS(...)``): its shared settings carry over.
    """
    runner = resolve_method(method, METHODS)
    seed = resolve_seed(seed)
    start = time.perf_counter()
    post = runner.run(model, model_args, model_kwargs, jax.random.PRNGKey(seed), progress)
    post.wall_time = time.perf_counter() - start
    post.seed = seed
    return post


# --- the unconstrained space --------------------------------------------------------------------------
class _Space:
    """The model's latent sites, their transforms, and potentials over one flat unconstrained vector."""

    def __init__(self, model, args, kwargs, key, init=None):
        strategy = init_to_median if init is None else init_to_value(values=init)
        info, _, _, trace = initialize_model(key, model, model_args=args, model_kwargs=kwargs,
                                             init_strategy=strategy)
        self.model, self.args, self.kwargs = model, args, kwargs
        self.init, self.unravel = ravel_pytree(info.z)
        self.shapes = {k: tuple(trace[k]["value"].shape) for k in info.z}
        self.real = {k: _is_real(trace[k]["fn"].support) for k in info.z}

    def constrain(self, u):
        return constrain_fn(self.model, self.args, self.kwargs, self.unravel(u))

    def potential(self, jacobian: bool) -> Callable:
        if jacobian:
            return lambda u: potential_energy(self.model, self.args, self.kwargs, self.unravel(u))
        return lambda u: -log_density(self.model, self.args, self.kwargs, self.constrain(u))[0]


def _is_real(support) -> bool:
    from numpyro.distributions import constraints

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _minimize(U: Callable, u0, steps: int, tol: float | None, label: str):
    tol = (1e-6 if u0.dtype == jnp.float64 else 1e-3) if tol is None else tol
    start = float(U(u0))
    res = jax_minimize(jax.jit(U), u0, method="BFGS", options={"maxiter": steps, "gtol": tol})
    value, grad = float(res.fun), np.asarray(res.jac)
    if not np.isfinite(value) or not np.isfinite(np.asarray(res.x)).all():
        raise InferenceError(f"{label}: the energy became non-finite during minimisation: it may be unbounded "
                             "below (check its sign, add a proper prior) or undefined where the optimiser went.")
    norm = float(jnp.linalg.norm(res.x))
    if not bool(res.success) and np.abs(grad).max() > tol * max(1.0, abs(value)):
        if value < start and norm > 1e4 * (1.0 + float(jnp.linalg.norm(u0))):
            raise InferenceError(f"{label}: the energy kept falling (to {value:.4g}, |θ| = {norm:.3g}): it looks "
                                 "unbounded below, so there is no minimum. Check the energy's sign or add a prior.")
        raise InferenceError(f"{label}: did not converge in {steps} iterations (gradient max-norm "
                             f"{np.abs(grad).max():.3g}); raise `steps`, loosen `tol`, or pass `init`.")
    return res.x, value, {"converged": True, "iterations": int(res.nit), "energy": value,
                          "grad_norm": float(np.abs(grad).max())}


# --- approximations over JAX arrays ------------------------------------------------------------------
class _JaxPoint:
    def __init__(self, values):
        self.values = values

    def sample(self, n, seed):
        return {k: jnp.broadcast_to(v, (n,) + v.shape) for k, v in self.values.items()}

    def mean(self):
        return dict(self.values)

    def std(self):
        return {k: jnp.zeros_like(v) for k, v in self.values.items()}


class _JaxGaussian:
    """Gaussian over the flat unconstrained vector; exact moments for sites on the reals."""

    num_moment_draws = 20000

    def __init__(self, space: _Space, loc, scale_tril):
        self.space, self.loc, self.scale_tril = space, loc, scale_tril

    @property
    def covariance(self):
        return self.scale_tril @ self.scale_tril.T

    def sample(self, n, seed):
        eps = jax.random.normal(jax.random.PRNGKey(seed), (n, self.loc.shape[0]), dtype=self.loc.dtype)
        return jax.vmap(self.space.constrain)(self.loc + eps @ self.scale_tril.T)

    @cached_property
    def _moments(self):
        locs = self.space.unravel(self.loc)
        sds = self.space.unravel(jnp.sqrt(jnp.diag(self.covariance)))
        draws = self.sample(self.num_moment_draws, 0) if not all(self.space.real.values()) else None
        mean = {k: locs[k] if self.space.real[k] else draws[k].mean(0) for k in locs}
        std = {k: sds[k] if self.space.real[k] else draws[k].std(0, ddof=1) for k in locs}
        return mean, std

    def mean(self):
        return dict(self._moments[0])

    def std(self):
        return dict(self._moments[1])


class _JaxGuide:
    """A NumPyro guide with its trained parameters; moments from a fixed-seed batch of draws."""

    num_moment_draws = 20000

    def __init__(self, guide, params, args, kwargs):
        self.guide, self.params, self.args, self.kwargs = guide, params, args, kwargs

    def sample(self, n, seed):
        return self.guide.sample_posterior(jax.random.PRNGKey(seed), self.params, *self.args,
                                           sample_shape=(n,), **self.kwargs)

    @cached_property
    def _draws(self):
        return self.sample(self.num_moment_draws, 0)

    def mean(self):
        return {k: v.mean(0) for k, v in self._draws.items()}

    def std(self):
        return {k: v.std(0, ddof=1) for k, v in self._draws.items()}


# --- methods -----------------------------------------------------------------------------------------
@register("map", METHODS)
@dataclass
class MAP(Method):
    """Energy minimisation with BFGS (``jax.scipy.optimize``); the twin of :class:`pyebm.MAP`."""

    steps: int = 500
    tol: float | None = None
    init: dict | None = None

    def run(self, model, args, kwargs, key, progress):
        space = _Space(model, args, kwargs, key, self.init)
        u, _, diag = _minimize(space.potential(False), space.init, self.steps, self.tol, "MAP")
        mode = space.constrain(u)
        return Posterior("map", _JaxPoint(mode), site_shapes=space.shapes, mode=mode, diagnostics=diag)


@register("laplace", METHODS)
@dataclass
class Laplace(MAP):
    """Laplace approximation with the exact ``jax.hessian`` (or its diagonal); the twin of :class:`pyebm.Laplace`."""

    hessian: str = "full"

    def run(self, model, args, kwargs, key, progress):
        if self.hessian not in ("full", "diag"):
            raise ValueError(f"unknown hessian {self.hessian!r}; choose 'full' or 'diag'.")
        space = _Space(model, args, kwargs, key, self.init)
        U = space.potential(True)
        u, value, diag = _minimize(U, space.init, self.steps, self.tol, "LAPLACE")
        H = jax.hessian(U)(u)
        H = 0.5 * (H + H.T)
        if self.hessian == "diag":
            H = jnp.diag(jnp.diag(H))
        evals = np.linalg.eigvalsh(np.asarray(H))
        floor = (1e-10 if H.dtype == jnp.float64 else 1e-5) * max(float(np.abs(evals).max()), 1.0)
        if evals[0] <= floor:
            raise InferenceError(f"Laplace: the Hessian at the 'minimum' is not positive definite (smallest "
                                 f"eigenvalue {evals[0]:.3g}): a saddle or a flat direction, where no Gaussian fits.")
        chol = jnp.linalg.cholesky(H)
        cov = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(H.shape[0], dtype=H.dtype))
        D = u.shape[0]
        log_z = -value + 0.5 * D * math.log(2 * math.pi) - float(jnp.log(jnp.diag(chol)).sum())
        diag["hessian"] = H
        return Posterior("laplace", _JaxGaussian(space, u, jnp.linalg.cholesky(cov)), site_shapes=space.shapes,
                         mode=space.constrain(u), log_evidence=log_z, diagnostics=diag)


@register("svi", METHODS)
@dataclass
class SVI(Method):
    """NumPyro SVI with an autoguide (full rank up to 100 dimensions, diagonal above) and a decaying
    ClippedAdam; the twin of :class:`pyebm.SVI`."""

    guide: str | Callable = "auto"
    steps: int = 2000
    lr: float = 0.02
    lr_decay: float = 0.01
    num_particles: int = 1
    init_scale: float = 0.1

    def run(self, model, args, kwargs, key, progress):
        key_init, key_run = jax.random.split(key)
        space = _Space(model, args, kwargs, key_init)
        name = self.guide
        if callable(name) and not isinstance(name, str):
            guide = name
        else:
            if name == "auto":
                name = "multivariate_normal" if space.init.shape[0] <= FULL_RANK_MAX_DIM else "normal"
            guides = {"normal": AutoDiagonalNormal, "multivariate_normal": AutoMultivariateNormal}
            if name not in guides:
                raise ValueError(f"unknown guide {self.guide!r}; choose 'auto', {sorted(guides)} or pass a guide.")
            guide = guides[name](model, init_loc_fn=init_to_median, init_scale=self.init_scale)
        steps = max(self.steps, 1)
        schedule = lambda i: self.lr * self.lr_decay ** (i / steps)  # noqa: E731
        svi = ninfer.SVI(model, guide, numpyro.optim.ClippedAdam(schedule), ninfer.Trace_ELBO(self.num_particles))
        result = svi.run(key_run, self.steps, *args, progress_bar=progress, **kwargs)
        losses = np.asarray(result.losses)
        if not np.isfinite(losses).all():
            step = int(np.argmax(~np.isfinite(losses)))
            raise InferenceError(f"SVI: the ELBO became non-finite at step {step}; lower `lr` or check the energy.")
        tail = losses[-max(1, len(losses) // 10):]
        diagnostics = {"elbo": (-losses).tolist(), "final_elbo": float(-tail.mean()), "guide": str(name)}
        return Posterior("svi", _JaxGuide(guide, result.params, args, kwargs), site_shapes=space.shapes,
                         diagnostics=diagnostics)


@dataclass
class _MCMC(Method):
    num_samples: int = 1000
    warmup_steps: int = 500
    num_chains: int = 2
    chain_method: str = "sequential"
    target_accept: float = 0.8
    init: dict | None = None

    def kernel(self, model):  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, model, args, kwargs, key, progress):
        mcmc = ninfer.MCMC(self.kernel(model), num_warmup=self.warmup_steps, num_samples=self.num_samples,
                           num_chains=self.num_chains, chain_method=self.chain_method, progress_bar=progress)
        mcmc.run(key, *args, extra_fields=("diverging", "num_steps", "mean_accept_prob"), **kwargs)
        draws = mcmc.get_samples(group_by_chain=True)
        extra = mcmc.get_extra_fields(group_by_chain=True)
        diverging = np.asarray(extra["diverging"])
        divergences = [np.flatnonzero(d).tolist() for d in diverging]
        accept = np.asarray(extra["mean_accept_prob"])[:, -1].tolist()
        post = posterior_from_draws(self.name, draws, divergences, accept)
        post.diagnostics["num_gradient_evaluations"] = int(np.asarray(extra["num_steps"]).sum())
        return post

    def _init(self):
        return init_to_uniform if self.init is None else init_to_value(values=self.init)


@register("nuts", METHODS)
@dataclass
class NUTS(_MCMC):
    """NumPyro's NUTS (compiled); ``chain_method`` "sequential" (default), "vectorized" or "parallel"
    (the last needs ``numpyro.set_host_device_count`` before JAX starts)."""

    max_tree_depth: int = 10
    full_mass: bool = False

    def kernel(self, model):
        return ninfer.NUTS(model, target_accept_prob=self.target_accept, max_tree_depth=self.max_tree_depth,
                           dense_mass=self.full_mass, init_strategy=self._init())


@register("hmc", METHODS)
@dataclass
class HMC(_MCMC):
    """NumPyro's HMC with a fixed trajectory length."""

    step_size: float = 0.1
    trajectory_length: float = 2.0
    full_mass: bool = False

    def kernel(self, model):
        return ninfer.HMC(model, step_size=self.step_size, trajectory_length=self.trajectory_length,
                          target_accept_prob=self.target_accept, dense_mass=self.full_mass,
                          init_strategy=self._init())
