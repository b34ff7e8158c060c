"""Token ids -> learned embeddings -> a sequence encoder: the default for a modality of token ids
(a text column loaded with ``text_encoder: tokens``)."""

from __future__ import annotations

from torch import Tensor, nn

from mmbench.core.errors import SpecError
from mmbench.core.registry import ENCODERS
from mmbench.models.encoders.base import Encoded, Encoder
from mmbench.models.encoders.sequence import GRUEncoder, TransformerEncoder

BODIES = {"gru": GRUEncoder, "transformer": TransformerEncoder}


@ENCODERS.register("embedding")
class EmbeddingEncoder(Encoder):
    """Token ids ``[B, T]`` (+ lengths) -> ``nn.Embedding(vocab_size, dim, padding_idx=pad_id)``
    -> `body` (``gru`` or ``transformer``, with its own options in `body_options`) over the real
    tokens; pooled = the body's masked mean, sequence = its per-token states.

    `vocab_size` and `pad_id` are the tokenizer's: the model passes them from the modality's
    input description (``Split.info["vocabularies"]``, set by the loaders that give token ids).
    Without lengths, the tokens equal to `pad_id` are padding. A missing sample (all padding,
    length 0) encodes to zeros, which the model's presence mask then keeps out of the fusion."""

    # MultimodalModel passes a token modality's vocab_size and pad_id to encoders that say so
    takes_vocabulary = True

    def __init__(self, sample_shape: tuple[int, ...], out_dim: int = 64, vocab_size: int | None = None, pad_id: int = 0,
                 dim: int = 64, body: str = "gru", body_options: dict | None = None):
        super().__init__()
        if vocab_size is None or int(vocab_size) < 1:
            raise SpecError("embedding encoder: needs the tokenizer's vocab_size (given by a loader that sets "
                            "Split.info['vocabularies'] for its token modality, or as the encoder option vocab_size)")
        if not 0 <= int(pad_id) < int(vocab_size):
            raise SpecError(f"embedding encoder: pad_id {pad_id} is outside the vocabulary (size {vocab_size})")
        if body not in BODIES:
            raise SpecError(f"embedding encoder: body must be one of {', '.join(BODIES)}, not {body!r}")
        self.vocab_size, self.pad_id = int(vocab_size), int(pad_id)
        self.embed = nn.Embedding(self.vocab_size, dim, padding_idx=self.pad_id)
        self.body = BODIES[body]((dim,), out_dim=out_dim, **(body_options or {}))
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        ids = x.long()
        if lengths is None:
            lengths = (ids != self.pad_id).sum(1)
        return self.body(self.embed(ids), lengths)
