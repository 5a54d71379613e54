r"""A classifier trained as an energy over (input, label): JEM (Grathwohl et al., 2020).

With :math:`E(x, y) = -f_y(x)` (:class:`pyebm.energies.ClassifierEnergy`), :math:`\log p(x, y) = \log p(y \mid x) +
\log p(x)` splits into the classifier's cross-entropy and the likelihood of the input under the free energy
:math:`F(x) = -\log\sum_y e^{-E(x,y)}`, which is trained contrastively: persistent Langevin chains on :math:`F` give
the negatives (:class:`pyebm.train.PCD`). ``generative=0`` leaves only the cross-entropy: the plain classifier, the
same network trained the usual way.
"""

from __future__ import annotations

import dataclasses

from torch.nn import functional as F

from ..inference.registry import positive_float
from .base import register_objective
from .contrastive import PCD

__all__ = ["JEM"]


def _pairs(batch, name: str):
    if isinstance(batch, tuple) and len(batch) == 2:
        return batch
    raise TypeError(f"method {name!r} trains on pairs (inputs, integer labels); pass data=(x, y).")


@register_objective("jem")
@dataclasses.dataclass
class JEM(PCD):
    r"""Cross-entropy of :math:`p(y \mid x)` plus ``generative`` times persistent contrastive divergence on the free
    energy of the input, :math:`\overline{F(x^+)} - \overline{F(x^-)}`, with PCD's chain settings (``k``,
    ``step_size``, ``noise_scale``, ``buffer_size``, ``reinit_prob``, ``init``, ``alpha``). The energy must have
    ``energies(x)`` (all labels) and ``forward(x)`` = the free energy, as :class:`pyebm.energies.ClassifierEnergy`."""

    generative: float = 1.0

    def check(self) -> None:
        positive_float("JEM", "generative", self.generative, allow_zero=True)
        super().check()

    def setup(self, energy, data, generator):
        if not callable(getattr(energy, "energies", None)):
            raise TypeError("method 'jem' needs an energy over (input, label) with `energies(x)` (all labels), e.g. "
                            f"pyebm.energies.ClassifierEnergy(net); got {type(energy).__name__}.")
        x, _ = _pairs(data, self.name)
        return super().setup(energy, x, generator)

    def loss(self, energy, batch, state, generator):
        x, y = _pairs(batch, self.name)
        loss = F.cross_entropy(-energy.energies(x), y.long())
        if not self.generative:
            return loss, len(x)
        contrastive, evaluations = super().loss(energy, x, state, generator)
        return loss + self.generative * contrastive, evaluations + len(x)
