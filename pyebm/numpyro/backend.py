"""The NumPyro backend: a thin adapter between NumPyro models and pyebm's algorithms.

The potential comes from NumPyro's own ``initialize_model`` (batched by ``jax.vmap``); NumPyro's NUTS/HMC and SVI are
the drivers; :class:`NumPyroModelView` gives a Posterior its deterministic sites, predictive and log-likelihoods.
The algorithms themselves (minimiser, Laplace, curvature, approximations) are the library's, shared with Pyro.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.infer as ninfer
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import block, seed, trace
from numpyro.infer.initialization import init_to_median, init_to_value
from numpyro.infer.util import initialize_model

from ..energy import ENERGY_FACTOR_KEY
from ..inference.potential import Potential, Site
from .ops import JAX

__all__ = ["NumPyroBackend", "NUMPYRO", "NumPyroModelView"]


def _key(seed_value: int):
    return jax.random.PRNGKey(seed_value % 2**32)


def _on_reals(transform) -> bool:
    from numpyro.distributions.transforms import IdentityTransform, IndependentTransform

    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, IdentityTransform)


def _prototype(model, args, kwargs, seed_value: int) -> dict:
    with block():
        return trace(seed(model, _key(seed_value))).get_trace(*args, **kwargs)


def _latent(tr: dict) -> dict:
    return {k: s for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
            and not (s.get("infer") or {}).get("is_auxiliary")}


def numpyro_potential(model, args, kwargs, init, seed_value: int, what: str) -> Potential:
    """The potential of a NumPyro model on NumPyro's ``initialize_model``; sites in the order NumPyro's
    ``ravel_pytree`` packs them (sorted by name), evaluated for a batch of points by ``jax.vmap``."""
    proto = _prototype(model, args, kwargs, seed_value)
    latent = _latent(proto)
    discrete = [k for k, s in latent.items() if s["fn"].support.is_discrete]
    if discrete:
        raise ValueError(f"{what}: sites {discrete} are discrete. The NumPyro backend does not sum discrete latents "
                         "out (that needs funsor); use the Pyro backend (pyebm.infer), which enumerates them.")
    if not latent:
        raise ValueError("the model has no continuous latent sample sites: there is nothing to infer.")
    if isinstance(init, dict):
        unknown = sorted(set(init) - set(latent))
        if unknown:
            raise ValueError(f"init names {unknown}, which are not latent sites of the model ({list(latent)}).")
        for k, v in init.items():
            if tuple(jnp.shape(v)) != tuple(latent[k]["value"].shape):
                raise ValueError(f"init['{k}'] has shape {tuple(jnp.shape(v))}, but site '{k}' has shape "
                                 f"{tuple(latent[k]['value'].shape)}.")
    strategy = init_to_median if init is None else init_to_value(values=init)
    info, potential_fn, _, _ = initialize_model(_key(seed_value), model, init_strategy=strategy, model_args=args,
                                                model_kwargs=kwargs)
    z = info.z
    sites = []
    for name in sorted(z):
        t = biject_to(latent[name]["fn"].support)
        sites.append(Site(name, tuple(latent[name]["value"].shape), tuple(z[name].shape), t, _on_reals(t)))
    u0 = jnp.concatenate([jnp.reshape(z[s.name], (-1,)) for s in sites])
    layout = Potential(sites, u0, JAX, None, batched=True)  # for its packing maps

    def one(u, jacobian: bool):
        params = layout.unpack(u)
        value = potential_fn(params)
        if not jacobian:
            value = value + layout.log_abs_det_jacobian(u[None])[0]
        return value

    with_jac, without = jax.vmap(lambda u: one(u, True)), jax.vmap(lambda u: one(u, False))
    return Potential(sites, u0, JAX, lambda u, jacobian: with_jac(u) if jacobian else without(u), batched=True,
                     potential_fn=potential_fn)


class NumPyroGuideApproximation:
    """A NumPyro guide with its trained parameters; moments from a fixed-seed batch of draws."""

    kind = "guide"
    num_moment_draws = 20000

    def __init__(self, guide, params, args, kwargs):
        self.guide, self.params, self.args, self.kwargs = guide, params, args, kwargs

    def sample(self, n, seed_value):
        return self.guide.sample_posterior(_key(seed_value), self.params, *self.args, sample_shape=(n,), **self.kwargs)

    @cached_property
    def _draws(self):
        return self.sample(self.num_moment_draws, 0)

    def mean(self):
        return {k: v.mean(0) for k, v in self._draws.items()}

    def std(self):
        return {k: v.std(0, ddof=1) for k, v in self._draws.items()}

    def ordered(self, group_by_chain):
        return None


class NumPyroModelView:
    """What a Posterior needs from its NumPyro model (see :class:`pyebm.inference.pyro_backend.PyroModelView`);
    everything runs vectorised over draws by NumPyro's ``Predictive`` and ``log_likelihood``."""

    discrete: list = []

    def __init__(self, model, args, kwargs):
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs)
        tr = _prototype(model, self.args, self.kwargs, 0)
        self.order, self.deterministic, self.observed, self.param_names = [], [], [], []
        for name, site in tr.items():
            if site["type"] == "param":
                self.param_names.append(name)
            elif site["type"] == "deterministic":
                self.deterministic.append(name)
                self.order.append(name)
            elif site["type"] == "sample":
                infer = site.get("infer") or {}
                if site["is_observed"]:
                    if not infer.get("is_auxiliary") and not infer.get(ENERGY_FACTOR_KEY):
                        self.observed.append(name)
                elif not infer.get("is_auxiliary"):
                    self.order.append(name)
        self.observed_values = {k: tr[k]["value"] for k in self.observed}
        self.site_shapes = {k: tuple(jnp.shape(tr[k]["value"])) for k in self.order}
        self._params = {k: tr[k]["value"] for k in self.param_names}

    @property
    def extra_sites(self) -> list[str]:
        return list(self.deterministic)

    def params(self) -> dict:
        return dict(self._params)

    def complete(self, draws: dict, seed_value: int, temperature: float = 1.0) -> dict:
        out = dict(draws)
        if self.deterministic:
            pred = ninfer.Predictive(self.model, posterior_samples=draws, return_sites=self.deterministic)
            out.update(pred(_key(seed_value), *self.args, **self.kwargs))
        return {k: out[k] for k in self.order if k in out}

    def predictive(self, draws: dict, seed_value: int, model=None, args=None, kwargs=None) -> dict:
        model = self.model if model is None else model
        args, kwargs = (self.args if args is None else args), (self.kwargs if kwargs is None else kwargs)
        latent = {k: v for k, v in draws.items() if k not in self.deterministic}
        pred = ninfer.Predictive(model, posterior_samples=latent)
        out = pred(_key(seed_value), *args, **kwargs)
        tr = _prototype(model, args, kwargs, 0)
        keep = [k for k, s in tr.items() if s["type"] == "deterministic" or (
            s["type"] == "sample" and s["is_observed"] and not (s.get("infer") or {}).get("is_auxiliary"))]
        return {k: out[k] for k in keep if k in out}

    def log_likelihood(self, draws: dict) -> dict:
        latent = {k: v for k, v in draws.items() if k not in self.deterministic}
        ll = ninfer.util.log_likelihood(self.model, latent, *self.args, **self.kwargs)
        return {k: ll[k] for k in self.observed}

    def observed_data(self) -> dict:
        return dict(self.observed_values)


class NumPyroBackend:
    """Everything pyebm's methods need from NumPyro."""

    name = "numpyro"
    ops = JAX

    @contextlib.contextmanager
    def session(self, model: Callable, seed_value: int):
        yield model

    def potential(self, model, args, kwargs, *, init=None, jit_compile: bool = False, what: str = "inference",
                  seed: int = 0) -> Potential:
        return numpyro_potential(model, args, kwargs, init, seed, what)

    def model_view(self, model, args, kwargs, potential) -> NumPyroModelView:
        return NumPyroModelView(model, args, kwargs)

    def learnable_energy_parameters(self, model, args, kwargs) -> dict:
        return {}

    def mcmc(self, method, potential: Potential, seed_value: int, progress: bool):
        """NumPyro's NUTS/HMC over the potential (its ``potential_fn`` interface), chains by ``chain_method``."""
        common = {"potential_fn": potential.potential_fn, "target_accept_prob": method.target_accept,
                  "dense_mass": method.full_mass}
        if method.name == "nuts":
            kernel = ninfer.NUTS(max_tree_depth=method.max_tree_depth, **common)
        elif method.num_steps is not None:
            kernel = ninfer.HMC(step_size=method.step_size, num_steps=method.num_steps, **common)
        else:
            kernel = ninfer.HMC(step_size=method.step_size, trajectory_length=method.trajectory_length, **common)
        key_init, key_run = jax.random.split(_key(seed_value))
        C = method.num_chains
        if method.init is not None:
            init = jnp.broadcast_to(potential.init, (C, potential.dim))
        else:
            init = jax.random.uniform(key_init, (C, potential.dim), dtype=potential.dtype, minval=-2.0, maxval=2.0)
        mcmc = ninfer.MCMC(kernel, num_warmup=method.warmup_steps, num_samples=method.num_samples, num_chains=C,
                           chain_method=method.chain_method, progress_bar=progress)
        mcmc.run(key_run, init_params=potential.kernel_params(init if C > 1 else init[0]),
                 extra_fields=("diverging", "num_steps", "mean_accept_prob"))
        u = potential.from_kernel_params(mcmc.get_samples(group_by_chain=True), (C, method.num_samples))
        extra = mcmc.get_extra_fields(group_by_chain=True)
        divergences = [np.flatnonzero(d).tolist() for d in np.asarray(extra["diverging"])]
        accept = np.asarray(extra["mean_accept_prob"])[:, -1].tolist()
        return u, divergences, accept, {"num_gradient_evaluations": int(np.asarray(extra["num_steps"]).sum())}

    def svi(self, method, model, args, kwargs, potential: Potential, start, seed_value: int, progress: bool):
        """NumPyro's SVI with its Gaussian autoguide (started at the Laplace solution where given) or the user's
        guide, and a decaying ClippedAdam."""
        from numpyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal

        from ..inference.approximations import Gaussian
        from ..inference.curvature import DenseCovariance, Diagonal

        name = method.auto_guide(potential.dim)
        loc, structure = start
        init_params = None
        if name is None:
            guide, label = method.guide, getattr(method.guide, "__name__", type(method.guide).__name__)
        else:
            label = name
            cls = AutoMultivariateNormal if name == "multivariate_normal" else AutoDiagonalNormal
            init_loc = init_to_value(values=method.init) if method.init is not None else init_to_median
            guide = cls(model, init_loc_fn=init_loc, init_scale=method.init_scale)
            if structure is not None:
                init_params = {"auto_loc": loc}
                if name == "multivariate_normal":
                    init_params["auto_scale_tril"] = jnp.linalg.cholesky(structure.covariance())
                else:
                    init_params["auto_scale"] = jnp.sqrt(structure.variance())
        steps = method.steps
        schedule = lambda i: method.lr * method.lr_decay ** (i / steps)  # noqa: E731
        svi = ninfer.SVI(model, guide, numpyro.optim.ClippedAdam(schedule), ninfer.Trace_ELBO(method.num_particles))
        result = svi.run(_key(seed_value), steps, *args, progress_bar=progress, init_params=init_params, **kwargs)
        losses = np.asarray(result.losses)
        if name is None:
            return NumPyroGuideApproximation(guide, result.params, args, kwargs), losses, label
        if name == "multivariate_normal":
            shape = DenseCovariance(result.params["auto_scale_tril"], JAX)
        else:
            shape = Diagonal(result.params["auto_scale"] ** 2, JAX)
        # the guide packs its sites as the potential does: sorted by name (ravel_pytree)
        return Gaussian(potential, result.params["auto_loc"], shape), losses, label


#: the NumPyro backend
NUMPYRO = NumPyroBackend()
