"""The estimator the command line runs: loads its weights only when a text must be computed.

Imported lazily by :func:`skmoe.cli_common.make_transformer` (it imports torch), so ``skmoe
--help`` stays fast.
"""

from __future__ import annotations

import time

from ._cli_errors import options_errors, say
from .encoder import SentenceEncoder
from .estimator import MoEEmbeddingTransformer


class CommandLineTransformer(MoEEmbeddingTransformer):
    """:class:`~skmoe.estimator.MoEEmbeddingTransformer` that says when it loads the weights.

    The estimator loads the model on the first text not in the cache (a fully cached run never
    does); this says so on stderr when it happens, and turns an error of loading with these
    options into the command line's one-line error, whenever the loading comes.
    """

    def get_encoder(self) -> SentenceEncoder:
        announced = self.loaded()
        if not announced:
            say(f"loading model {self.model} ...")
            start = time.perf_counter()
        with options_errors(self.model):
            encoder = super().get_encoder()
        if not announced:
            kind = "MoE" if encoder.is_moe else "dense"
            say(f"loaded {encoder.source.name} ({kind}) in {time.perf_counter() - start:.1f} s")
            self._cli_loaded = True
        return encoder

    def loaded(self) -> bool:
        """Whether this object has loaded (or been handed) the weights."""
        return getattr(self, "_cli_loaded", False)
