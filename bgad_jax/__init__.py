"""bgad_jax: BGAD (boundary-guided semi-push-pull anomaly detection) in JAX/Flax."""

from bgad_jax import losses
from bgad_jax.flow import (CONSTANTS, CouplingBlock, NormalizingFlow,
                           log_likelihood, per_dim_log_likelihood)
from bgad_jax.losses import bgad_loss, normal_only_loss
from bgad_jax.pos_embed import positional_encoding_2d

__version__ = '0.1.0'

__all__ = [
    'CONSTANTS', 'CouplingBlock', 'NormalizingFlow', 'bgad_loss', 'log_likelihood',
    'losses', 'normal_only_loss', 'per_dim_log_likelihood', 'positional_encoding_2d',
]
