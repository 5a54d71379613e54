r"""The potential: one object for a model's latent space, whatever the backend.

Every inference algorithm works on :math:`u \in \mathbb{R}^D`, the model's continuous latent sites mapped to the reals
by their supports' bijections :math:`T` and packed into one vector. The potential is the energy there,

.. math:: U(u) = -\log p(x, T(u)) - \log\left|\det \frac{\partial T}{\partial u}\right| ,

with the Jacobian term for densities (Laplace, SVI, MCMC) and without it for MAP, which minimises the energy of the
model in its own (constrained) coordinates. A :class:`Potential` holds the site layout, the initial point (its dtype
and device are the potential's), the array seam of its backend, and batched evaluation ``U(u)`` for ``u`` of shape
``(B, D)``. Backends build it: :mod:`pyebm.inference.pyro_backend` (on Pyro's ``initialize_model``, or directly from
an energy model) and :mod:`pyebm.numpyro.backend` (on NumPyro's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..ops import ArrayOps

__all__ = ["Site", "Potential"]


@dataclass(frozen=True)
class Site:
    """One continuous latent site: its name, constrained and unconstrained shapes, and the bijection from the reals
    onto its support (``transform(u) -> x``, with ``log_abs_det_jacobian(u, x)``)."""

    name: str
    shape: tuple
    unconstrained_shape: tuple
    transform: Any
    on_reals: bool  # the transform is the identity: the site lives on the reals

    @property
    def numel(self) -> int:
        n = 1
        for s in self.unconstrained_shape:
            n *= s
        return n


class Potential:
    """A model's latent space and its potential energy, batched over leading dimensions of ``u``.

    Parameters
    ----------
    sites : list of Site
        The layout of ``u``, in the model's order.
    init : array (D,)
        The initial point (unconstrained); the potential's dtype and device are its.
    ops : ArrayOps
        The array seam of the backend.
    evaluate : callable
        ``evaluate(u (B, D), jacobian: bool) -> (B,)`` energies.
    batched : bool
        Whether ``evaluate`` takes all rows at once; otherwise rows are evaluated one by one.
    refusal : str, optional
        Why the potential cannot be evaluated (e.g. the model subsamples a plate); the layout stays usable.
    potential_fn : callable, optional
        The same potential (Jacobian included) of one point given as a dict of unconstrained site values, the form
        the backend's own kernels take; by default :meth:`__call__` on the packed point.
    one_point : callable or str, optional
        ``one_point(u (D,), jacobian) -> ()``: the potential of one point written so that the backend's ``vmap`` can
        map it (see :meth:`vectorized`); or a sentence saying why there is none.
    many_points : callable, optional
        ``many_points(u (B, D), jacobian) -> (B,)``: a batched form the backend writes itself where ``vmap`` cannot
        map the one-point form (e.g. enumeration under a plate over the points); preferred by :meth:`vectorized`.
    trace : optional
        A run of the model that built the potential, which the backend's model view may read for the model's
        structure (its sites, shapes and observed data) instead of running the model again.
    """

    def __init__(self, sites: list[Site], init, ops: ArrayOps, evaluate: Callable, *, batched: bool,
                 refusal: str | None = None, potential_fn: Callable | None = None,
                 one_point: Callable | str | None = None, many_points: Callable | None = None, trace: Any = None):
        if not sites:
            raise ValueError("the model has no continuous latent sample sites: there is nothing to infer.")
        self.sites, self.init, self.ops = list(sites), init, ops
        self._evaluate, self.batched, self.refusal, self.one_point = evaluate, batched, refusal, one_point
        self.many_points, self.trace = many_points, trace
        self.dim = sum(s.numel for s in self.sites)
        self.potential_fn = potential_fn or (lambda params: self(self.pack(params)[None], True)[0])

    @property
    def dtype(self):
        return self.init.dtype

    def names(self) -> list[str]:
        return [s.name for s in self.sites]

    def shapes(self) -> dict[str, tuple]:
        return {s.name: tuple(s.shape) for s in self.sites}

    # --- packing ------------------------------------------------------------------------------------------------
    def unpack(self, u) -> dict:
        """Split ``u`` of shape ``(*batch, D)`` into unconstrained values per site."""
        out, start = {}, 0
        for s in self.sites:
            out[s.name] = u[..., start : start + s.numel].reshape(tuple(u.shape[:-1]) + tuple(s.unconstrained_shape))
            start += s.numel
        return out

    def pack(self, values: dict, batch: tuple = ()):
        """The inverse of :meth:`unpack` (unconstrained values, leading ``batch`` dimensions)."""
        return self.ops.concat([values[s.name].reshape(tuple(batch) + (s.numel,)) for s in self.sites], -1)

    def constrain(self, u) -> dict:
        """Site values (constrained) of ``u`` of shape ``(*batch, D)``."""
        return {s.name: v if s.on_reals else s.transform(v) for s, v in zip(self.sites, self.unpack(u).values())}

    def unconstrain(self, values: dict, batch: tuple = ()):
        """``u`` for constrained site values (leading ``batch`` dimensions)."""
        return self.pack({s.name: values[s.name] if s.on_reals else s.transform.inv(values[s.name]) for s in self.sites},
                         batch)

    def log_abs_det_jacobian(self, u):
        r""":math:`\log|\det \partial T/\partial u|` per row of ``u`` (shape ``(B, D)``)."""
        total = self.ops.zeros(u.shape[:1], u)
        for s, v in zip(self.sites, self.unpack(u).values()):
            if not s.on_reals:
                ladj = s.transform.log_abs_det_jacobian(v, s.transform(v))
                total = total + self.ops.sum(ladj.reshape((u.shape[0], -1)), 1)
        return total

    # --- evaluation -----------------------------------------------------------------------------------------------
    def __call__(self, u, jacobian: bool = True):
        """Energies ``(B,)`` of the rows of ``u`` (``(B, D)``)."""
        if self.refusal:
            raise ValueError(self.refusal)
        if self.batched or u.shape[0] == 1:
            return self._evaluate(u, jacobian)
        return self.ops.concat([self._evaluate(u[i : i + 1], jacobian) for i in range(u.shape[0])])

    @cached_property
    def _value_and_grad(self) -> dict:
        return {j: self.ops.value_and_grad(lambda u, j=j: self(u, j)) for j in (True, False)}

    def value_and_grad(self, jacobian: bool = True) -> Callable:
        """``u (B, D) -> (energies (B,), gradients (B, D))``."""
        return self._value_and_grad[jacobian]

    def hessian(self, u, jacobian: bool = True):
        """The Hessian of every row, ``(B, D, D)``."""
        return self.ops.hessian(lambda v: self(v, jacobian), u)

    def hessian_diagonal(self, u, jacobian: bool = True):
        """The Hessian diagonal of every row, ``(B, D)``, by Hessian-vector products (never a D x D matrix)."""
        return self.ops.hessian_diagonal(lambda v: self(v, jacobian), u)

    def vectorized(self, what: str) -> Potential:
        """This potential evaluating a batch of points in one call: itself where it already does, else its one-point
        form mapped by the backend's ``vmap`` and checked against point-by-point evaluation at a few points near the
        initial one. A ValueError says why where it cannot be."""
        if self.batched:
            return self
        how = ("Use method='nuts', or write the model to run on one point without Python control flow on tensor "
               "values (.item(), `if x > 0`, in-place writes).")
        if callable(self.many_points):
            how = ("Use method='nuts', or write the model to broadcast over an extra leading batch dimension, as "
                   "Pyro's vectorised particles need (index with `pyro.ops.indexing.Vindex(locs)[..., z]`, not "
                   "`locs[z]`; sum over negative dims).")
            mapped = {j: lambda v, j=j: self.many_points(v, j) for j in (True, False)}
        elif callable(self.one_point):
            mapped = {j: self.ops.vmap(lambda u, j=j: self.one_point(u, j)) for j in (True, False)}
        else:
            raise ValueError(f"{what} needs the potential of many points in one call, and this one cannot be "
                             f"vectorised: {self.one_point or 'no one-point form'}. {how}")
        spread = self.ops.normal(0, (4, self.dim), self.init)
        u = self.init[None] + 0.3 * spread
        try:
            together = mapped[True](u)
        except Exception as err:  # noqa: BLE001 - vmap fails in as many ways as a model can be written
            raise ValueError(f"{what} needs the potential of many points in one call; vectorising it failed: "
                             f"{(str(err).splitlines() or [type(err).__name__])[0][:300]}. {how}") from None
        a, b = self.ops.to_numpy(together), self.ops.to_numpy(self(u, True))
        tol = 1e-4 if self.ops.eps(u) > 1e-10 else 1e-8
        scale = 1.0 + np.abs(b[np.isfinite(b)]).max(initial=0.0)
        if a.shape != b.shape or not np.allclose(a, b, rtol=0.0, atol=tol * scale, equal_nan=True):
            raise ValueError(f"{what} needs the potential of many points in one call; vectorised, this model's "
                             f"energies differ from its point-by-point ones ({a} against {b}). {how}")
        return Potential(self.sites, self.init, self.ops, lambda v, jacobian: mapped[jacobian](v), batched=True,
                         potential_fn=self.potential_fn, one_point=self.one_point, many_points=self.many_points,
                         trace=self.trace)

    def unpack_spread(self, v) -> dict:
        """Per-site values of a vector of spreads (standard deviations) over ``u``: held coordinates spread zero."""
        return self.unpack(v)

    # --- the form a backend's kernels take ----------------------------------------------------------------------
    def kernel_params(self, u) -> dict:
        """One point as the dict of unconstrained values that :attr:`potential_fn` takes."""
        return self.unpack(u)

    def from_kernel_params(self, params: dict, batch: tuple = ()):
        return self.pack(params, batch)

    def restricted(self, free, held=None) -> Potential:
        """This potential over the ``free`` coordinates only (a boolean mask over ``u``), the others held at
        ``held`` (a full point; default the initial point); itself where every coordinate is free."""
        free = np.asarray(free, dtype=bool)
        return self if free.all() else Restricted(self, free, held)


class Restricted(Potential):
    """A potential over some coordinates of another, the rest held at a point (its initial point by default): for
    latent elements that are masked out of the density (``obs_mask``, ``poutine.mask``), which would otherwise be
    flat, improper directions, and for Laplace over a subset of the sites (the rest held at the mode). Draws and values
    are reported on the full layout, the held elements at their held values."""

    def __init__(self, full: Potential, free: np.ndarray, held=None):
        self.full, self.index, self._free = full, np.flatnonzero(free), free
        self.held = full.init if held is None else held
        super().__init__(full.sites, self.held[self.index], full.ops,
                         lambda u, jacobian: full(self.expand(u), jacobian), batched=full.batched,
                         refusal=full.refusal, potential_fn=lambda params: self(params["u"][None], True)[0],
                         trace=full.trace)
        self.dim = len(self.index)

    def vectorized(self, what: str) -> Potential:
        full = self.full.vectorized(what)
        return self if full is self.full else Restricted(full, self._free, self.held)

    def expand(self, u):
        """The point(s) of the potential it restricts for ``u`` (``(..., D_free)`` to ``(..., D)``)."""
        return self.ops.scatter(self.held, self.index, u)

    def unpack(self, u) -> dict:
        return self.full.unpack(self.expand(u))

    def unpack_spread(self, v) -> dict:
        return self.full.unpack_spread(self.ops.scatter(self.held * 0, self.index, v))

    def pack(self, values: dict, batch: tuple = ()):
        return self.full.pack(values, batch)[..., self.index]

    def log_abs_det_jacobian(self, u):
        return self.full.log_abs_det_jacobian(self.expand(u))

    def kernel_params(self, u) -> dict:
        return {"u": u}

    def from_kernel_params(self, params: dict, batch: tuple = ()):
        return params["u"]
