"""scikit-learn's bundled 8×8 digits under synthetic distribution shifts, and the small BatchNorm MLP that the
test-time-training tutorial and benchmark adapt (needs the ``digits`` extra: scikit-learn).

* :func:`load`: a seeded 1000 / 300 / 497 split into training, validation and test digits in [0, 1];
* :data:`SHIFTS`: five test shift families (noise, contrast, blur, rotation, translation) at severities 1–3;
  :data:`VALIDATION`: two other families (brightness, zoom), for choosing hyperparameters without touching the test
  shifts;
* :func:`make_net` / :func:`train`: the MLP 64-64-BN-SiLU-64-BN-SiLU-10 (smooth, so energies of its weights have a
  Hessian) and its Adam training loop;
* :data:`LATENTS` (the BatchNorm scales and shifts, 256 weights) and :data:`HEAD` (the second BatchNorm's shift and
  the output bias, re-fitted per input by the neighbour recipe).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

__all__ = ["load", "SHIFTS", "VALIDATION", "domain", "make_net", "train", "LATENTS", "HEAD"]

LATENTS = ["2.weight", "2.bias", "5.weight", "5.bias"]
HEAD = ["5.bias", "7.bias"]

Split = tuple[torch.Tensor, torch.Tensor]


def load(seed: int = 0) -> tuple[Split, Split, Split]:
    """Digits as ``(images (n, 8, 8) in [0, 1], labels (n,))``, split at random (``seed``) into 1000 training, 300
    validation and 497 test examples, in the default dtype."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("pyebm.examples.digits needs scikit-learn: pip install 'pyro-ebm[digits]'.") from err
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.get_default_dtype())
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, va, te = perm[:1000], perm[1000:1300], perm[1300:]
    return (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])


def _affine(x: torch.Tensor, angle_deg: float = 0.0, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    a = math.radians(angle_deg)
    theta = torch.tensor([[math.cos(a) / scale, -math.sin(a) / scale, shift * 2 / 8],
                          [math.sin(a) / scale, math.cos(a) / scale, shift * 2 / 8]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), (len(x), 1, 8, 8), align_corners=False)
    return F.grid_sample(x[:, None], grid, align_corners=False, padding_mode="zeros")[:, 0]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x[:, None], (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))[:, 0]


def _noise(s):
    return lambda x, g: (x + s * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)


def _contrast(c):
    return lambda x, g: (x - x.mean((1, 2), keepdim=True)) * c + x.mean((1, 2), keepdim=True)


SHIFTS = {  # family -> [severity 1, 2, 3], each a function (images, torch.Generator) -> shifted images
    "noise": [_noise(s) for s in (0.15, 0.3, 0.45)],
    "contrast": [_contrast(c) for c in (0.5, 0.3, 0.15)],
    "blur": [lambda x, g, s=s: _blur(x, s) for s in (0.6, 0.9, 1.2)],
    "rotation": [lambda x, g, a=a: _affine(x, angle_deg=a) for a in (10, 20, 30)],
    "translation": [lambda x, g, t=t: _affine(x, shift=t) for t in (0.5, 1.0, 1.5)],
}
VALIDATION = {
    "brightness": [lambda x, g, b=b: (x + b).clamp(0, 1) for b in (0.15, 0.3)],
    "zoom": [lambda x, g, z=z: _affine(x, scale=z) for z in (0.85, 0.75)],
}


def domain(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random training domain for latents-on training: one gain and offset per batch (generic, not a test
    shift)."""
    gain = 0.6 + 0.8 * torch.rand((), generator=g)
    offset = 0.2 * (torch.rand((), generator=g) - 0.5)
    return (x * gain + offset).clamp(0, 1)


def make_net(seed: int = 0) -> nn.Module:
    """The MLP 64-64-BN-SiLU-64-BN-SiLU-10 on flattened 8×8 images, initialised from ``seed`` (a local generator:
    the global RNG is left alone)."""
    fork = torch.random.fork_rng()
    with fork:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.SiLU(), nn.Linear(64, 64),
                             nn.BatchNorm1d(64), nn.SiLU(), nn.Linear(64, 10))


def train(net: nn.Module, data: Split, steps: int, seed: int = 0, progress: bool = False) -> nn.Module:
    """Adam (lr 3e-3, weight decay 1e-4) on the cross-entropy of minibatches of 128 for ``steps`` steps; returns
    ``net`` in eval mode."""
    x, y = data
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in tqdm(range(steps), desc="training", disable=not progress):
        idx = torch.randint(len(x), (128,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()
