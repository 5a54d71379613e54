r"""Concept learning from a demonstration: a few points drawn from a shape define an energy over the shape's
parameters (the concept); inferring them is latent inference, and new instances come from minimising the energy of a
point under the inferred concept.

A concept :math:`\theta` (a circle's centre and radius, a line's angle and offset) scores a point by its squared
distance to the shape, :math:`e_\theta(x) = d_\theta(x)^2 / 2\sigma^2`. A demonstration :math:`x_{1:n}` gives the
concept the energy :math:`E(\theta) = \sum_i e_\theta(x_i)` under a prior :math:`p(\theta)`: MAP is the best-fitting
shape, Laplace and NUTS its posterior, which narrows as the demonstration grows. Generation runs the other way: at a
fixed :math:`\theta`, every point of the shape minimises :math:`e_\theta`, and gradient descent from random starts
lands on it, one point per start (a set of minima, not one).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from ..energy import energy_factor
from ..inference.minimize import minimize
from ..ops import TORCH

__all__ = ["SHAPES", "distance", "concept_model", "demonstration", "generate"]

#: the shapes and the names of their parameters (the concept's latent sites)
SHAPES = {"circle": ("centre", "radius"), "line": ("angle", "offset")}


def distance(shape: str, x: torch.Tensor, params: dict) -> torch.Tensor:
    r"""Distance of points ``x`` (``(..., 2)``) to the shape with parameters ``params`` (batched alike): a circle's
    :math:`\lvert\lVert x - c\rVert - r\rvert`, a line's :math:`\lvert x\cdot n(\phi) - b\rvert` with normal
    :math:`n(\phi) = (\cos\phi, \sin\phi)`."""
    if shape == "circle":
        return ((x - params["centre"]).norm(dim=-1) - params["radius"]).abs()
    if shape == "line":
        normal = torch.stack([torch.cos(params["angle"]), torch.sin(params["angle"])], -1)
        return ((x * normal).sum(-1) - params["offset"]).abs()
    raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}.")


def concept_model(points: torch.Tensor, shape: str = "circle", noise: float = 0.05) -> None:
    """The Pyro model of a concept given a demonstration ``points`` (``(n, 2)``): weak priors on the shape's
    parameters and the demonstration's energy :math:`\\sum_i d_\\theta(x_i)^2 / 2\\sigma^2`, ``noise`` = σ."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}.")
    if points.dim() != 2 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {tuple(points.shape)}.")
    zero = points.new_zeros(())
    if shape == "circle":
        params = {"centre": pyro.sample("centre", dist.Normal(zero, 3.0).expand([2]).to_event(1)),
                  "radius": pyro.sample("radius", dist.LogNormal(zero, 1.0))}
    else:
        params = {"angle": pyro.sample("angle", dist.VonMises(zero, 0.1)),
                  "offset": pyro.sample("offset", dist.Normal(zero, 3.0))}
    energy_factor("demonstration", (distance(shape, points, params) ** 2).sum() / (2 * noise**2))


def demonstration(shape: str, params: dict, n: int, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """``n`` points of the shape (uniform along a circle, or along a stretch of length 4 of a line), each moved by
    Gaussian noise of sd ``noise`` across it; float64."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    jitter = noise * torch.randn(n, generator=g, dtype=torch.float64)
    if shape == "circle":
        c, r = torch.as_tensor(params["centre"], dtype=torch.float64), float(params["radius"])
        a = 2 * math.pi * t
        return c + (r + jitter)[:, None] * torch.stack([torch.cos(a), torch.sin(a)], -1)
    phi, b = float(params["angle"]), float(params["offset"])
    normal = torch.tensor([math.cos(phi), math.sin(phi)], dtype=torch.float64)
    along = torch.tensor([-math.sin(phi), math.cos(phi)], dtype=torch.float64)
    return (b + jitter)[:, None] * normal + (4 * t - 2)[:, None] * along


def generate(shape: str, params: dict, starts: torch.Tensor) -> torch.Tensor:
    """New instances of the concept: each row of ``starts`` (``(n, 2)``) moved by L-BFGS to a minimum of the point
    energy :math:`d_\\theta(x)^2` under ``params`` (one concept, or one per row: leading dimension ``n``)."""

    def energy(x):
        return distance(shape, x, params) ** 2

    result = minimize(TORCH.value_and_grad(energy), starts.detach().clone(), ops=TORCH, verify=False, steps=200)
    return result.u
