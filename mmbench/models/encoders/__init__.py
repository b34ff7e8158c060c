"""Per-modality encoders. Each takes a batch of one modality and returns an `Encoded`.

Encoders never use BatchNorm: in training mode its batch statistics would mix the fill
values of missing modalities into the features of present ones.
"""

from mmbench.models.encoders.base import CNN_MIN_SIDE, Encoded, Encoder, default_encoder_for

__all__ = ["CNN_MIN_SIDE", "Encoded", "Encoder", "default_encoder_for"]
