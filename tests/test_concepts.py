"""Concept learning from a demonstration: the concept found by MAP, its Laplace posterior narrowing as the
demonstration grows, new instances generated on the inferred shape."""

import math

import pytest
import torch

import pyebm
from pyebm.examples import concepts

CIRCLE = {"centre": [1.0, -0.5], "radius": 1.5}


def fit(points, shape="circle", method="map"):
    return pyebm.infer(concepts.concept_model, points, shape, method=method, seed=0, progress=False)


def test_map_recovers_the_demonstrated_circle_and_line(float64):
    points = concepts.demonstration("circle", CIRCLE, 10, seed=1)
    mode = fit(points).mode
    # 10 points with noise 0.05 across the circle: the centre and radius are known to ~0.05 / sqrt(10 / 2)
    assert torch.allclose(mode["centre"], torch.tensor(CIRCLE["centre"]), atol=0.08)
    assert abs(float(mode["radius"]) - 1.5) < 0.05
    line = {"angle": 0.6, "offset": 0.3}
    pts = concepts.demonstration("line", line, 10, seed=2)
    mode = fit(pts, "line").mode
    # (angle, offset) and (angle + pi, -offset) are the same line: compare the line, through the points' distances
    assert float(concepts.distance("line", pts, mode).max()) < 4 * 0.05
    direction = torch.tensor([math.cos(float(mode["angle"])), math.sin(float(mode["angle"]))])
    assert abs(float(direction @ torch.tensor([math.cos(0.6), math.sin(0.6)]))) > math.cos(0.05)


def test_the_concept_posterior_narrows_as_the_demonstration_grows(float64):
    """Laplace posterior sd of the radius from the first 1, 3 and 10 points of one demonstration: one point leaves a
    circle of any radius through it (the prior decides, sd 2.5), three close together pin it loosely (sd 1.0),
    ten all around fix it to the noise's order (sd 0.02)."""
    points = concepts.demonstration("circle", CIRCLE, 10, seed=1)
    sds = [float(fit(points[:n], method="laplace").std()["radius"]) for n in (1, 3, 10)]
    assert sds[0] > 2.0 and sds[0] > 1.5 * sds[1] and sds[1] > 10 * sds[2]
    assert sds[2] < 0.05


def test_generated_points_lie_on_the_inferred_circle_all_around_it(float64):
    points = concepts.demonstration("circle", CIRCLE, 10, seed=1)
    mode = fit(points).mode
    starts = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    new = concepts.generate("circle", mode, starts)
    assert float(concepts.distance("circle", new, mode).max()) < 1e-4
    # one point per start, spread around the whole circle (not collapsed to one minimum)
    angles = torch.atan2(*(new - mode["centre"]).T.flip(0))
    assert torch.histc(angles, bins=8, min=-math.pi, max=math.pi).min() > 5


def test_concepts_refuse_bad_input(float64):
    with pytest.raises(ValueError, match="unknown shape 'square'"):
        fit(torch.zeros(3, 2, dtype=torch.float64), "square")
    with pytest.raises(ValueError, match=r"points must have shape \(n, 2\)"):
        fit(torch.zeros(3, 3, dtype=torch.float64))
