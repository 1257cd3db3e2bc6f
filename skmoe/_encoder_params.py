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
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from ._stack import external_stacklevel
from .encoder import DEFAULT_MODEL
from .encoder.fingerprint import changed_parts, legacy_fingerprint
from .encoder.loading import ModelSource, safetensors_files
from .engine.windows import DEFAULT_CHUNK_OVERLAP

__all__ = ["EncoderParams", "WeightsChangedError"]


class WeightsChangedError(RuntimeError):
    """The weights found at load time differ from those the estimator was fitted with."""


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

    @contextmanager
    def _fitting(self) -> Iterator[None]:
        """While ``fit`` runs: the model's files are not checked against the previous fit's (a
        refit may change the model) until ``fit`` sets ``_fit_source`` to the files it fits on;
        a model loaded later in the fit must then be those. Nothing fitted is touched here, so
        a fit that raises leaves the previous fitted state as it was."""
        self.__dict__["_fit_source"] = None
        try:
            yield
        finally:
            self.__dict__.pop("_fit_source", None)

    def _check_source(self, source: ModelSource) -> None:
        """Refuse other weights, tokenizer or config than fit saw (``model_fingerprint_``),
        naming which; note a new revision name for the same files."""
        fitted: str | None
        then: str | None
        name: str | None
        if "_fit_source" in self.__dict__:  # fit is running: its own files, once it knows them
            fitting: ModelSource | None = self.__dict__["_fit_source"]
            if fitting is None:
                return
            fitted, then, name = fitting.fingerprint, fitting.revision, None
        else:
            fitted = getattr(self, "model_fingerprint_", None)
            if fitted is None:
                return
            then = getattr(self, "model_revision_", None)
            name = getattr(self, "model_name_", None)  # absent: pickled before, LearnedPooling
        if fitted != source.fingerprint and not _legacy_match(fitted, source):
            what = " and ".join(changed_parts(fitted, source.fingerprint))
            fitted_with = f"{fitted}{f', revision {then}' if then else ''}"
            if name is not None and name != str(self.model):
                raise WeightsChangedError(
                    f"model changed after fit (fitted with {name!r}, now {str(self.model)!r}), "
                    f"and the {what} differ from those this {type(self).__name__} was fitted "
                    f"with (fingerprint {source.fingerprint}, revision {source.revision}; fitted "
                    f"with {fitted_with}); call fit again, or set model back to {name!r}."
                )
            raise WeightsChangedError(
                f"The {what} of {self.model!r} (fingerprint {source.fingerprint}, revision "
                f"{source.revision}) differ from those this {type(self).__name__} was fitted "
                f"with ({fitted_with}). Pin revision= or refit."
            )
        if then is not None and source.revision != then:
            # Same files under another name (e.g. the hub branch moved to a commit that changed
            # only the README): results are unchanged, but say so.
            warnings.warn(
                f"{self.model!r} resolved to revision {source.revision}, fitted with {then}; "
                f"the weights are identical (fingerprint {fitted}).",
                UserWarning,
                stacklevel=external_stacklevel(),
            )


def _legacy_match(fitted: str, source: ModelSource) -> bool:
    """An estimator fitted (and pickled) with skmoe's first, sampled fingerprint: same files?"""
    if len(fitted) != 16 or "-" in fitted:
        return False
    folder = Path(source.path)
    return legacy_fingerprint(folder, safetensors_files(folder)) == fitted
