r"""Training energies: contrastive methods, score matching and regularized latent-variable methods.

An energy :math:`E_\theta` inside ``pyro.factor`` ignores :math:`\log Z(\theta)`; maximising a likelihood or ELBO
through it pushes the energy down everywhere (the collapse that :func:`pyebm.infer` refuses). The objectives here
train :math:`\theta` honestly:

* contrastive (:mod:`~pyebm.train.contrastive`): ``"cd"``, ``"pcd"``, ``"nce"``, ``"margin"``, ``"infonce"``;
* score matching (:mod:`~pyebm.train.score`): ``"dsm"``, ``"ssm"``;
* reconstruction (:mod:`~pyebm.train.denoising`): ``"dae"`` (a denoising autoencoder: score matching by another
  name), ``"masked"`` (BERT-style hidden coordinates: their conditional means);
* generator negatives (:mod:`~pyebm.train.generator`): ``"generator"``, a GAN read as a contrastive EBM;
* regularized latent variables (:mod:`~pyebm.train.regularized`): ``"sparse_coding"``, ``"kmeans"``, ``"vae"``,
  and ``"free_energy"`` for any energy with a discrete or continuous latent;
* a classifier as an energy over (input, label) (:mod:`~pyebm.train.jem`): ``"jem"``;
* joint embeddings (:mod:`~pyebm.train.joint`): ``"infonce"`` versus ``"variance_covariance"`` (no negatives).

``fit(energy, data, method=...)`` runs any of them; ``evaluate_2d`` scores a learned 2-D density exactly.
"""

from .base import OBJECTIVES, Objective
from .contrastive import (
    CD,
    NCE,
    PCD,
    InfoNCE,
    Margin,
    contrastive_divergence_loss,
    infonce_loss,
    margin_loss,
    nce_loss,
)
from .denoising import DAE, Masked, dae_loss, masked_loss, random_masks
from .evaluate import evaluate_2d, grid_samples, mmd
from .generator import FlowGenerator, GeneratorNegatives, generator_negatives_loss
from .jem import JEM
from .joint import JointEmbedding, VarianceCovariance, embedding_collapse, variance_covariance_loss
from .loop import TrainResult, fit
from .regularized import (
    KMeansObjective,
    LatentFreeEnergy,
    SparseCodingObjective,
    VAEObjective,
    kmeans_loss,
    latent_free_energy,
    latent_free_energy_loss,
    sparse_coding_loss,
    vae_loss,
)
from .score import DSM, SSM, dsm_loss, ssm_loss

__all__ = [
    "fit", "TrainResult", "Objective", "OBJECTIVES",
    "CD", "PCD", "NCE", "Margin", "InfoNCE", "DSM", "SSM", "KMeansObjective", "SparseCodingObjective", "VAEObjective",
    "contrastive_divergence_loss", "nce_loss", "margin_loss", "infonce_loss", "dsm_loss", "ssm_loss",
    "kmeans_loss", "sparse_coding_loss", "vae_loss", "evaluate_2d", "mmd", "grid_samples",
    "JointEmbedding", "VarianceCovariance", "variance_covariance_loss", "embedding_collapse",
    "GeneratorNegatives", "FlowGenerator", "generator_negatives_loss",
    "DAE", "Masked", "dae_loss", "masked_loss", "random_masks", "LatentFreeEnergy", "latent_free_energy",
    "latent_free_energy_loss", "JEM",
]
