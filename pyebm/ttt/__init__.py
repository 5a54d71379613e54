r"""Test-time training as latent inference: the weights adapted at test time are latent variables.

* :func:`adapt` infers chosen weights of a trained network from a test batch's energy (MAP, Laplace, SVI, NUTS),
  shared by the batch or independently per input (vectorised);
* :func:`predict` averages predictions over their posterior (or linearises the network: the GLM predictive);
* prior scales (and a Gaussian likelihood's noise) chosen by the Laplace evidence (``prior_scale="evidence"``,
  :class:`Evidence`), post hoc, or online while training a network (:func:`marglik_training`);
* :func:`fit` trains with the latents switched on, so deployment matches training;
* energies: :func:`entropy` (TENT), :func:`free_energy` (JEM), :func:`supervised`, :func:`augmented` (test-time
  augmentation) and :func:`neighbours` (the k-nearest-training-examples recipe);
* :class:`AdaptationCache` reuses an adapted posterior for inputs that fall close to one already adapted;
* baselines: :func:`batch_statistics` (normalise with the test batch's statistics) and :func:`tent`.
"""

from .adapt import adapt, predict
from .baselines import batch_statistics, tent
from .cache import AdaptationCache
from .energies import Neighbourhood, augmented, entropy, free_energy, neighbours, supervised
from .evidence import Evidence
from .marglik import MarglikResult, marglik_training
from .training import TTTResult, fit

__all__ = ["adapt", "predict", "fit", "TTTResult", "entropy", "free_energy", "supervised", "augmented",
           "neighbours", "Neighbourhood", "AdaptationCache", "batch_statistics", "tent",
           "Evidence", "marglik_training", "MarglikResult"]
