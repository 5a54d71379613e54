r"""Energies and how they enter Pyro models.

An energy :math:`E` is a negative log-density up to a constant and a temperature,

.. math:: p_\beta(x) = \frac{1}{Z(\beta)} \exp(-\beta E(x)), \qquad Z(\beta) = \int \exp(-\beta E(x))\,dx .

:func:`energy_factor` adds :math:`-\beta E` to a Pyro model's log joint through a
``pyro.factor``-like site that :func:`pyebm.temper` can recognise; :func:`model_from_energy`
builds a whole model from an energy and a dict of site shapes.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Union

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.runtime import _PYRO_STACK, get_plates
from torch import nn

from .diagnostics import check_beta, check_energy

__all__ = ["Energy", "energy_factor", "model_from_energy", "EnergyModel", "DirectEnergy", "flat_prior",
           "ENERGY_FACTOR_KEY"]

#: key in a site's ``infer`` dict that marks it as an energy factor (read by :func:`pyebm.temper`)
ENERGY_FACTOR_KEY = "pyebm_energy_factor"

Shape = Union[int, tuple, torch.Size]

class Energy(nn.Module):
    r"""Base class for energies: an ``nn.Module`` whose ``forward(value, **ctx)`` returns energies.

    An energy returns one value per configuration: for ``value`` of shape ``(*batch, *event)`` the
    result has shape ``batch``. Energies compose like the log-densities they stand for:
    ``e1 + e2`` is the energy of the product of the two Gibbs densities and ``c * e`` rescales it
    (``c`` a number: a fixed change of temperature).

    Examples
    --------
    >>> class Quadratic(Energy):
    ...     def forward(self, x):
    ...         return 0.5 * (x**2).sum(-1)
    >>> e = Quadratic() + 2.0 * Quadratic()
    >>> float(e(torch.ones(3)))
    4.5
    """

    def __add__(self, other: Energy | Callable) -> Energy:
        if isinstance(other, Real) and other == 0:
            return self  # so that sum([e1, e2]) works
        return SumEnergy(self, other)

    def __radd__(self, other: Energy | Callable) -> Energy:
        if isinstance(other, Real) and other == 0:
            return self
        return SumEnergy(other, self)

    def __mul__(self, scale: float) -> Energy:
        if not isinstance(scale, (Real, torch.Tensor)):
            return NotImplemented
        return ScaledEnergy(scale, self)

    __rmul__ = __mul__

    def __neg__(self) -> Energy:
        return ScaledEnergy(-1.0, self)

    def __sub__(self, other: Energy | Callable) -> Energy:
        return SumEnergy(self, ScaledEnergy(-1.0, _as_module(other)))


class _Function(Energy):
    """An energy given as a plain function (kept so it composes and shows in ``repr``)."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.fn(*args, **kwargs)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def _as_module(e: Energy | Callable) -> nn.Module:
    if isinstance(e, nn.Module):
        return e
    if callable(e):
        return _Function(e)
    raise TypeError(f"cannot compose an energy with {type(e).__name__}; pass an Energy or a callable.")


class SumEnergy(Energy):
    r"""Sum of energies, :math:`E(x) = \sum_i E_i(x)`: the product of their Gibbs densities."""

    def __init__(self, *terms: Energy | Callable) -> None:
        super().__init__()
        flat = []
        for t in terms:
            flat.extend(t.terms if isinstance(t, SumEnergy) else [_as_module(t)])
        self.terms = nn.ModuleList(flat)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return sum(t(*args, **kwargs) for t in self.terms)


class ScaledEnergy(Energy):
    r"""A scalar multiple :math:`c\,E(x)` of an energy."""

    def __init__(self, scale: float | torch.Tensor, energy: Energy | Callable) -> None:
        super().__init__()
        self.scale = scale
        self.energy = _as_module(energy)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.scale * self.energy(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def plate_batch_shape(frames: list[tuple[int, int]]) -> tuple:
    """The batch shape that plates given as ``(dim, size)`` pairs imply, leading ones stripped."""
    if not frames:
        return ()
    shape = [1] * max(-dim for dim, _ in frames)
    for dim, size in frames:
        shape[dim] = size
    while shape and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


def batch_shape_error(name: str, shape: tuple, frames: list[tuple[int, int]], enumerating: bool) -> str | None:
    """The message for an energy of ``shape`` inside plates ``frames`` (``(dim, size)`` pairs), or None when it fits.

    Leading ones aside, the shape must be the plates' batch shape. Under enumeration (``enumerating``), as for
    ``pyro.factor``, enumeration dimensions of any size may appear where no plate is, and a plate's dimension may
    be 1 (the energy does not vary along it) or the plate's size.
    """
    expected = plate_batch_shape(frames)
    if not enumerating:
        got = tuple(shape)
        while got and got[0] == 1:
            got = got[1:]
        if got == tuple(expected):
            return None
    elif all(-dim > len(shape) or shape[dim] in (1, size) for dim, size in frames):
        return None
    what = "a scalar" if len(expected) == 0 else f"shape {tuple(expected)}"
    return (f"energy '{name}' has shape {tuple(shape)} where {what} is due (the batch shape of the enclosing plates"
            f"{', enumeration dimensions aside' if enumerating else ''}). Reduce per-element energies "
            "with .sum(-1) over event dimensions, or wrap batch dimensions in pyro.plate.")


def _plate_frames() -> list[tuple[int, int]]:
    return [(f.dim, f.size) for f in get_plates() if f.vectorized]


def energy_factor(name: str, energy: torch.Tensor, beta: float = 1.0, *, normalized: bool = False,
                  gauss_newton: Callable | None = None) -> None:
    r"""Add :math:`-\beta E` to the model's log joint, as ``pyro.factor(name, -beta * energy)`` does.

    The site is marked as an energy factor so that :func:`pyebm.temper` can rescale its β; a plain
    ``pyro.factor`` is a log-density term, not an energy, and ``temper`` leaves it alone.

    Parameters
    ----------
    name : str
        Site name.
    energy : torch.Tensor
        Energy value(s): a real floating tensor with the batch shape of the enclosing plates (a scalar outside any
        plate); under enumeration, enumeration dimensions may stand left of the plates, as for ``pyro.factor``.
    beta : float
        Inverse temperature: a number, finite and ``>= 0``. To learn a temperature, write it into the energy,
        ``energy_factor(name, lam * E)``.
    normalized : bool
        Declare that the energy is a normalised negative log-density in any learnable parameters it depends on
        (it carries its own :math:`\log Z(\theta)`). Only then may SVI optimise those parameters; otherwise
        :func:`pyebm.infer` refuses, because the ELBO ignores :math:`\log Z(\theta)` and the energy collapses.
    gauss_newton : callable, optional
        For Laplace's ``hessian="ggn"``: a function of no arguments returning the energy's natural parameters and
        its curvature in them, a list of ``(eta, curvature, blocks)`` with :math:`E = \sum \ell(\eta)`, ``eta`` a
        tensor computed from the latent sites (afresh on each call), ``curvature`` :math:`\nabla^2_\eta \ell`
        elementwise (``eta``'s shape) or, with ``blocks=True``, per row ``(..., C, C)``; positive semi-definite (the
        loss convex in ``eta``). For a cross-entropy in logits, ``blocks="softmax"`` with the probabilities
        ``(..., C)`` as ``curvature`` stands for :math:`\mathrm{diag}(p) - pp^\top` without building it
        (:func:`pyebm.inference.gauss_newton.softmax_curvature`). :func:`pyebm.ttt.supervised` energies give one.

    Notes
    -----
    A non-finite energy is zero density: inside any inference (Pyro's or pyebm's samplers, optimisers, SVI) the
    configuration is rejected, as ``pyro.factor`` with ``-inf`` would be. Called directly, outside every Pyro handler,
    the model raises instead, saying where.

    Raises
    ------
    TypeError, ValueError
        For a non-tensor or non-real energy, a mis-shaped one, a bad β, or (outside any handler) a non-finite energy.
    """
    beta = check_beta(beta, name="beta of energy factor '" + name + "'")
    check_energy(energy, name=name, finite=not _PYRO_STACK)
    enumerating = any(isinstance(m, EnumMessenger) for m in _PYRO_STACK)
    problem = batch_shape_error(name, tuple(energy.shape), _plate_frames(), enumerating)
    if problem:
        raise ValueError(problem)
    # a non-finite energy is zero density (no branch on its value: the factor runs under torch.func.vmap too)
    energy = torch.nan_to_num(energy, nan=math.inf, posinf=math.inf, neginf=math.inf)
    unit = dist.Unit(-beta * energy)
    pyro.sample(
        name,
        unit,
        obs=unit.sample(),
        infer={"is_auxiliary": True, ENERGY_FACTOR_KEY: True, "beta": beta, "normalized": bool(normalized),
               **({"ggn": (gauss_newton, beta)} if gauss_newton is not None else {})},
    )


def flat_prior(shape: Shape, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> dist.TorchDistribution:
    """Improper flat prior over the reals of the given event shape (on ``device``, default torch's).

    ``Normal(0, 1).expand(shape).to_event().mask(False)``: its support and transform are the
    reals and its log-density is zero; unlike ``ImproperUniform`` it has a sampler, so Pyro's
    initialisation, ``AutoDelta``, ``Predictive`` and NUTS all work with it.
    """
    shape = _as_shape(shape)
    zero = torch.zeros((), dtype=dtype or torch.get_default_dtype(), device=device)
    return dist.Normal(zero, zero + 1).expand(shape).to_event(len(shape)).mask(False)


def _as_shape(shape: Shape) -> torch.Size:
    if isinstance(shape, int):
        return torch.Size([shape])
    if isinstance(shape, (tuple, list, torch.Size)) and all(isinstance(s, int) and s > 0 for s in shape):
        return torch.Size(shape)
    raise ValueError(f"a site shape must be an int or a tuple of positive ints, got {shape!r}.")


def resolve_sites(
    energy: Callable, sites: Mapping[str, Shape], prior: Mapping | None, flat: Callable, distribution: type,
    library: str,
) -> tuple[dict, dict, frozenset, bool]:
    """Validate an energy model's parts; shared by the Pyro and NumPyro backends.

    Returns site shapes, one prior per site (``flat(shape)`` where none is given; batch dimensions moved to the
    event), the names of the sites with the flat prior, and whether a single site is passed to the energy
    positionally.
    """
    if not callable(energy):
        raise TypeError(f"energy must be callable (an Energy or a function), got {type(energy).__name__}.")
    if not sites:
        raise ValueError("sites is empty; pass a dict of site names to shapes, e.g. {'x': 2}.")
    shapes = {name: _as_shape(shape) for name, shape in sites.items()}
    prior = dict(prior or {})
    unknown = set(prior) - set(shapes)
    if unknown:
        raise ValueError(f"prior names sites {sorted(unknown)} that are not in sites {list(shapes)}.")
    priors, flats = {}, set()
    for name, shape in shapes.items():
        d = prior.get(name)
        if d is None:
            d = flat(shape)
            flats.add(name)
        elif not isinstance(d, distribution):
            raise TypeError(f"prior['{name}'] must be a {library} distribution, got {type(d).__name__}.")
        elif tuple(d.batch_shape) + tuple(d.event_shape) != tuple(shape):
            raise ValueError(
                f"prior['{name}'] has shape {tuple(d.batch_shape) + tuple(d.event_shape)} but site '{name}' "
                f"has shape {tuple(shape)}."
            )
        elif d.batch_shape:
            d = d.to_event(len(d.batch_shape))
        priors[name] = d
    positional = len(shapes) == 1 and not _takes_keyword(energy, next(iter(shapes)))
    return shapes, priors, frozenset(flats), positional


@dataclass(frozen=True)
class DirectEnergy:
    r"""An energy model's density in closed form, for evaluation without tracing the model:
    :math:`\log p(\theta) - \beta E(\theta)`, ``prior`` per site (those in ``flat`` contribute nothing).

    :attr:`EnergyModel.direct` gives one and a tempered model passes it on with its β, so inference can take the
    cheaper road of one batched energy call instead of a Pyro trace per evaluation.
    """

    prior: dict
    flat: frozenset
    energy: Callable
    positional: bool
    beta: float = 1.0

    def __call__(self, values: dict, **ctx) -> torch.Tensor:
        """:math:`\beta E` at site ``values`` (leading batch dimensions allowed where the energy allows them)."""
        e = self.energy(*values.values(), **ctx) if self.positional else self.energy(**values, **ctx)
        return e if self.beta == 1.0 else self.beta * e

    def tempered(self, beta: float) -> DirectEnergy:
        return DirectEnergy(self.prior, self.flat, self.energy, self.positional, self.beta * beta)


class EnergyModel:
    """A Pyro model made from an energy: returned by :func:`model_from_energy`.

    Callable as ``model(**ctx)``; ``ctx`` is passed on to the energy as keyword arguments.
    """

    def __init__(self, energy: Callable, sites: Mapping[str, Shape], prior: Mapping | None = None) -> None:
        flat = lambda shape: flat_prior(shape, energy_dtype(energy), energy_device(energy))  # noqa: E731
        self.sites, self.prior, self.flat, self._positional = resolve_sites(
            energy, sites, prior, flat, dist.Distribution, "pyro")
        self.energy = energy

    @property
    def direct(self) -> DirectEnergy:
        """The model's density in closed form (see :class:`DirectEnergy`)."""
        return DirectEnergy(self.prior, self.flat, self.energy, self._positional)

    def accepts_keyword(self, name: str) -> bool:
        """Whether ``model(name=...)`` reaches the energy (keywords are passed on to it)."""
        return _takes_keyword(self.energy, name)

    def __call__(self, **ctx) -> torch.Tensor:
        values = {name: pyro.sample(name, d) for name, d in self.prior.items()}
        e = self.direct(values, **ctx)
        energy_factor("energy", e, normalized=bool(getattr(self.energy, "normalized", False)))
        return e

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}: {tuple(v)}" for k, v in self.sites.items())
        return f"EnergyModel({self.energy!r}, sites={{{sites}}})"


def energy_dtype(energy: Callable) -> torch.dtype:
    """The floating dtype of a module energy's parameters/buffers, else torch's default."""
    if isinstance(energy, nn.Module):
        for t in list(energy.parameters()) + list(energy.buffers()):
            if t.dtype.is_floating_point:
                return t.dtype
    return torch.get_default_dtype()


def energy_device(energy: Callable) -> torch.device | None:
    """The device of a module energy's parameters/buffers (None: torch's default), where the flat prior must live."""
    if isinstance(energy, nn.Module):
        for t in list(energy.parameters()) + list(energy.buffers()):
            return t.device
    return None


def _takes_keyword(fn: Callable, name: str) -> bool:
    """Whether ``fn`` accepts ``name`` as a keyword (else a single site is passed positionally)."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def model_from_energy(
    energy: Callable, sites: Mapping[str, Shape], prior: Mapping[str, dist.Distribution] | None = None
) -> EnergyModel:
    r"""Build a Pyro model whose log joint is :math:`\log p(\theta) - E(\theta)`.

    Parameters
    ----------
    energy : Energy or callable
        Called with each site as a keyword argument (``energy(x=..., y=...)``). With a single site
        whose name the energy does not take as a keyword, the value is passed positionally, so a
        one-argument energy works whatever the site is called. Must return a scalar.
    sites : dict
        Site name to shape, e.g. ``{"x": 2}`` or ``{"w": (3, 4)}``.
    prior : dict, optional
        Site name to a Pyro distribution. Sites not named get an improper flat prior over the reals
        (:func:`flat_prior`, in the dtype of the energy's parameters or buffers), so that the posterior is exactly the Gibbs density
        :math:`\propto \exp(-E)`. A prior with constrained support (``LogNormal``, ``HalfNormal``)
        makes inference run in the unconstrained space through the support's transform.

    Examples
    --------
    >>> from pyebm.energies import Gaussian
    >>> model = model_from_energy(Gaussian(torch.zeros(2), torch.eye(2)), {"x": 2})
    >>> post = pyebm.infer(model, method="laplace")  # doctest: +SKIP
    """
    return EnergyModel(energy, sites, prior)
