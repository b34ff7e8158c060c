"""Models: per-modality encoders -> fusion -> head."""
