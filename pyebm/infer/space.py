r"""The latent space of a model: its sample sites packed into one unconstrained vector.

Inference works on :math:`u \in \mathbb{R}^D`, the concatenation of every latent site mapped to
the reals by ``biject_to(support).inv``. The potential (energy) in that space is

.. math:: U(u) = -\log p(x, T(u)) - \log\left|\det \frac{\partial T}{\partial u}\right| ,

the Jacobian term included for densities (Laplace, NUTS, SVI) and left out for the MAP point,
which minimises the energy of the model in its own (constrained) coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median
from pyro.poutine.util import site_is_subsample
from torch.distributions.transforms import ComposeTransform, IndependentTransform

from ..energy import ENERGY_FACTOR_KEY

__all__ = ["Site", "LatentSpace", "learnable_energy_parameters"]


@dataclass(frozen=True)
class Site:
    """One latent site: its name, constrained shape, unconstrained shape and transform."""

    name: str
    shape: torch.Size
    unconstrained_shape: torch.Size
    transform: torch.distributions.Transform

    @property
    def numel(self) -> int:
        return self.unconstrained_shape.numel()

    @property
    def is_real(self) -> bool:
        """Whether the transform is the identity (the site lives on the reals)."""
        t = self.transform
        while isinstance(t, IndependentTransform):
            t = t.base_transform
        return isinstance(t, ComposeTransform) and not t.parts


class LatentSpace:
    """The latent sites of ``model(*args, **kwargs)`` and the maps to and from one flat vector.

    Built by tracing the model once (under ``init``, Pyro's median initialisation by default); the
    traced values are the initial point :attr:`init`.
    """

    def __init__(self, model: Callable, args: tuple = (), kwargs: dict | None = None, init: Callable | dict | None = None):
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs or {})
        strategy = _init_strategy(init)
        with poutine.block(), pyro.validation_enabled(False):
            trace = poutine.trace(InitMessenger(strategy)(model)).get_trace(*self.args, **self.kwargs)
        sites, values = [], []
        for name, node in trace.nodes.items():
            if (node["type"] != "sample" or node["is_observed"] or node["infer"].get("is_auxiliary")
                    or site_is_subsample(node)):
                continue
            fn = node["fn"]
            if fn.support.is_discrete:
                raise ValueError(
                    f"site '{name}' is discrete ({type(fn).__name__}); pyebm's inference runs on continuous "
                    "latents. Sum discrete latents out in the energy (e.g. with pyebm.free_energy)."
                )
            transform = biject_to(fn.support)
            u = transform.inv(node["value"].detach())
            sites.append(Site(name, node["value"].shape, u.shape, transform))
            values.append(u.reshape(-1))
        if not sites:
            raise ValueError("the model has no latent sample sites: there is nothing to infer.")
        self.energy_parameters = learnable_energy_parameters(trace)
        self.sites: list[Site] = sites
        self.dim = sum(s.numel for s in sites)
        self.init = torch.cat(values)
        self.dtype = self.init.dtype

    # --- packing --------------------------------------------------------------------------
    def unpack(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``u`` of shape ``(*batch, D)`` into unconstrained values per site."""
        out, start = {}, 0
        for s in self.sites:
            out[s.name] = u[..., start : start + s.numel].reshape(u.shape[:-1] + s.unconstrained_shape)
            start += s.numel
        return out

    def constrain(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map ``u`` of shape ``(*batch, D)`` to constrained site values."""
        return {s.name: s.transform(v) for s, v in zip(self.sites, self.unpack(u).values())}

    def log_abs_det_jacobian(self, u: torch.Tensor) -> torch.Tensor:
        total = u.new_zeros(())
        for s, v in zip(self.sites, self.unpack(u).values()):
            x = s.transform(v)
            total = total + s.transform.log_abs_det_jacobian(v, x).sum()
        return total

    def names(self) -> list[str]:
        return [s.name for s in self.sites]

    # --- the potential -------------------------------------------------------------------
    def potential(self, jacobian: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
        """The energy :math:`U(u)` of the model in the unconstrained space (a scalar function)."""

        def U(u: torch.Tensor) -> torch.Tensor:
            values = self.constrain(u)
            trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(*self.args, **self.kwargs)
            energy = -trace.log_prob_sum()
            if jacobian:
                energy = energy - self.log_abs_det_jacobian(u)
            return energy

        return U


def learnable_energy_parameters(trace) -> dict[str, list[str]]:
    r"""Energy-factor sites whose value depends on learnable Pyro params of the model: ``{site: [param names]}``.

    Sites declared ``normalized=True`` are left out. These are the parameters whose optimisation through the
    ELBO collapses the energy (it ignores their :math:`\log Z(\theta)`).
    """
    params = {name: node["value"] for name, node in trace.nodes.items()
              if node["type"] == "param" and isinstance(node["value"], torch.Tensor) and node["value"].requires_grad}
    found = {}
    if not params:
        return found
    for name, node in trace.nodes.items():
        infer = node.get("infer") or {}
        if node["type"] != "sample" or not infer.get(ENERGY_FACTOR_KEY) or infer.get("normalized"):
            continue
        log_factor = node["fn"].log_factor
        if not log_factor.requires_grad:
            continue
        grads = torch.autograd.grad(log_factor.sum(), list(params.values()), allow_unused=True, retain_graph=True)
        used = [p for p, g in zip(params, grads) if g is not None]
        if used:
            found[name] = used
    return found


def _init_strategy(init: Callable | dict | None) -> Callable:
    if init is None:
        return init_to_median
    if isinstance(init, dict):
        from pyro.infer.autoguide.initialization import init_to_value

        return init_to_value(values={k: torch.as_tensor(v) for k, v in init.items()})
    if callable(init):
        return init
    raise TypeError(f"init must be None, a dict of site values or a Pyro init strategy, got {type(init).__name__}.")


def direct_potential(model: Callable, args: tuple, kwargs: dict):
    """For a bare :class:`pyebm.energy.EnergyModel`, its potential without Pyro's tracing.

    Returns ``(potential_fn, transforms)`` in the form Pyro's HMC/NUTS take (a function of a dict of
    unconstrained values, Jacobian included), or ``None`` when the model is anything else or runs
    under effect handlers (``temper``, ``condition``, ...), whose effects only the traced path sees.
    The energy is validated as :func:`pyebm.energy_factor` does under ``sampler_semantics``.
    """
    from pyro.poutine.runtime import _PYRO_STACK

    from ..diagnostics import check_energy
    from ..energy import EnergyModel

    if type(model) is not EnergyModel or args or _PYRO_STACK:
        return None
    transforms = {name: biject_to(d.support) for name, d in model.prior.items()}
    flat = {name: getattr(d, "_mask", None) is False for name, d in model.prior.items()}

    def potential_fn(params: dict[str, torch.Tensor]) -> torch.Tensor:
        values, total = {}, 0.0
        for name, t in transforms.items():
            u = params[name]
            x = t(u)
            values[name] = x
            total = total - t.log_abs_det_jacobian(u, x).sum()
            if not flat[name]:
                total = total - model.prior[name].log_prob(x)
        e = model.energy(*values.values(), **kwargs) if model._positional else model.energy(**values, **kwargs)
        check_energy(e, name="energy", expected_shape=(), finite=False)
        return total + e

    return potential_fn, transforms
