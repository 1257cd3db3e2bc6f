"""Adapters to neighbouring tools, each behind its optional extra.

- :mod:`skmoe.integrations.bertopic`: ``SkmoeBackend`` for ``BERTopic(embedding_model=...)``.
- :mod:`skmoe.integrations.mteb`: ``SkmoeMTEBEncoder`` for ``mteb.evaluate``.
- :mod:`skmoe.distributed` (Dask) lives at the top level.

Submodules import their tool on import; this package imports nothing, so ``import skmoe`` never
needs the extras.
"""
