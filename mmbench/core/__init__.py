"""Core: what every stage may import, and which imports no other mmbench package.

Errors (`errors`), atomic file writes (`io`), the name -> object registries (`registry`), the
on-disk feature cache (`cache`), checksummed downloads (`download`) and safe archive
extraction (`archive`). Nothing here imports torch at module level.
"""
