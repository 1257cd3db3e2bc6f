"""The parameters of the estimators over the frozen encoder that say which model and how texts
reach it, declared once.

:class:`~skmoe.estimator.MoEEmbeddingTransformer` and
:class:`~skmoe.learned_pooling.LearnedPooling` are dataclasses extending :class:`EncoderParams`:
the generated ``__init__`` stores every parameter verbatim, as scikit-learn requires, and each
parameter's name, type and default is written in one place. They are declared
``@dataclass(eq=False, repr=False, kw_only=True)``: scikit-learn's ``repr``, identity equality and
hashing, every parameter after ``model`` keyword-only. Each estimator documents them in its
own docstring (numpydoc), since what ``long_text="chunk"`` means differs between them.
"""

from __future__ import annotations

import os
from dataclasses import KW_ONLY, dataclass

from .encoder import DEFAULT_MODEL
from .engine.windows import DEFAULT_CHUNK_OVERLAP

__all__ = ["EncoderParams"]


@dataclass(eq=False, repr=False)
class EncoderParams:
    """Model files, prompt, token limit and long-text mode (the estimators' first parameters)."""

    model: str | os.PathLike[str] = DEFAULT_MODEL
    _: KW_ONLY
    revision: str | None = None
    prompt_name: str | None = "classification"
    prompt: str | None = None
    max_length: int | None = None
    long_text: str = "truncate"
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP

    def __dask_tokenize__(self) -> tuple[str, str]:
        """Dask names a task by its arguments' tokens, and tokenizes a dataclass by its fields
        alone: two estimators with the same parameters but fitted differently (another
        centre, other weights) got one name, and Dask handed back the first one's vectors.
        The token covers everything the estimator pickles: parameters and fitted state."""
        import joblib

        return type(self).__qualname__, joblib.hash(self)
