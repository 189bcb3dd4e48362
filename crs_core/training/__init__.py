"""Backbone training: the paper's two stages (synthetic-label pretraining, then fine-tuning with a KL
term to the frozen stage-1 model) as one Ray Train loop; see `loop.train_stage`.

Importing this package does not import Ray: the losses and data helpers are plain torch/numpy.
"""

from __future__ import annotations

from crs_core.training.data import STAGES, TrainingData, load_training_data
from crs_core.training.losses import grouped_cross_entropy, kl_to_reference, stage2_loss

__all__ = ["STAGES", "TrainingData", "grouped_cross_entropy", "kl_to_reference", "load_training_data", "stage2_loss"]
