"""Models: per-modality encoders (`encoders/`) -> fusion (`fusions/`) -> head (`model`), and the
retrieval dual encoder (`dual_encoder`). May import `core` and `data` (the batch format);
encoders and fusions register themselves in `mmbench.core.registry`.
"""
