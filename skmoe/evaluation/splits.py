"""Few-shot cross-validation splits: k examples per class, n seeded draws (SetFit / MTEB)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state
from sklearn.utils.validation import _num_samples, column_or_1d

from .._stack import external_stacklevel
from ..validation import check_label_types, check_no_missing, is_int_at_least


class FewShotWarning(UserWarning):
    """A class has too few examples for the requested number per class."""


class FewShotSplit(BaseCrossValidator):
    """Draw ``n_per_class`` training examples of every class, ``n_splits`` times.

    The protocol of SetFit (k in 2..64, 10 seeds) and MTEB's classification tasks (undersample
    the training split to k per label with a seeded shuffle): each split shuffles the rows and
    keeps the first ``n_per_class`` of every class. The test part is every other row, or a
    random ``test_size`` subset of them. Usable wherever scikit-learn takes ``cv=``
    (``cross_validate``, ``GridSearchCV``, ...).

    Parameters
    ----------
    n_per_class : int, default=8
        Training examples per class. A class with no more examples gives all it has (they are
        then all in the training part of every split, none in a test part), with a
        :class:`FewShotWarning`; if no class has more, ``split`` raises ``ValueError`` and
        ``train_draws`` warns that its draws are all the same rows.
    n_splits : int, default=10
        Number of seeded draws.
    test_size : int or float, optional
        Size of the test part: a number of rows, or a fraction of the rows left after the
        draw. Default: all of them.
    random_state : int, RandomState instance or None, default=0
        Seeds the draws. With an int, ``split`` yields the same splits on every call; draw
        ``i`` does not depend on ``test_size``. Splits of the same data with a larger
        ``n_per_class`` and the same seed contain the smaller ones' training rows.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0] * 10 + [1] * 10)
    >>> cv = FewShotSplit(n_per_class=2, n_splits=3, random_state=0)
    >>> [len(train) for train, test in cv.split(np.zeros((20, 1)), y)]
    [4, 4, 4]
    """

    def __init__(
        self,
        n_per_class: int = 8,
        n_splits: int = 10,
        test_size: float | int | None = None,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.n_per_class = n_per_class
        self.n_splits = n_splits
        self.test_size = test_size
        self.random_state = random_state

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of draws (``n_splits``)."""
        return int(self.n_splits)

    def _validate(self) -> None:
        for name in ("n_per_class", "n_splits"):
            if not is_int_at_least(getattr(self, name), 1):
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        ts = self.test_size
        if isinstance(ts, (bool, np.bool_)):
            raise ValueError(f"test_size must be an int, a float or None, got {ts!r}")
        if ts is not None:
            if isinstance(ts, Integral):
                if ts < 1:
                    raise ValueError(f"test_size as an int must be >= 1, got {ts}")
            elif isinstance(ts, Real):
                if not 0.0 < ts <= 1.0:
                    raise ValueError(f"test_size as a float must be in (0, 1], got {ts}")
            else:
                raise ValueError(f"test_size must be an int, a float or None, got {ts!r}")

    def split(
        self, X: Any, y: Any, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train, test)`` index arrays (sorted) for each draw.

        Parameters
        ----------
        X : array-like or sequence of length n_samples
            Only its length is used (texts are fine).
        y : array-like of shape (n_samples,)
            Class labels.
        groups : ignored
        """
        self._validate()
        n = _num_samples(X)
        classes, y_idx, counts = self._classes(y, n)
        if n and counts.max() <= self.n_per_class:
            raise ValueError(
                f"n_per_class={self.n_per_class} puts every row into training (the largest class "
                f"has {int(counts.max())} rows): no row is left to test on. Use a smaller "
                "n_per_class or more data."
            )
        self._warn_small(classes, counts, self.n_per_class + 1,
                         "all of them go to every training split and none is tested")
        for is_train, draw_rng in self._draws(y_idx, counts):
            train = np.flatnonzero(is_train)
            test = np.flatnonzero(~is_train)
            if self.test_size is not None and len(test):
                size = (self.test_size if isinstance(self.test_size, Integral)
                        else int(round(self.test_size * len(test))))
                size = min(max(size, 1), len(test))
                test = np.sort(draw_rng.choice(test, size=size, replace=False))
            yield train, test

    def train_draws(self, y: Any) -> Iterator[np.ndarray]:
        """Only the training rows of each draw (the same as ``split``'s), for evaluations whose
        test rows come from elsewhere: every row may be drawn, none needs to be left over."""
        self._validate()
        classes, y_idx, counts = self._classes(y, len(y))
        self._warn_small(classes, counts, self.n_per_class,
                         "every training split takes all they have")
        if self.n_splits > 1 and len(counts) and counts.max() <= self.n_per_class:
            warnings.warn(
                f"every class has at most n_per_class={self.n_per_class} examples (the largest "
                f"{int(counts.max())}): all {self.n_splits} draws take every row, so they are "
                "identical and their scores' standard deviation is 0, not a measure of noise; "
                "use an n_per_class below the class sizes",
                FewShotWarning, stacklevel=external_stacklevel())
        for is_train, _ in self._draws(y_idx, counts):
            yield np.flatnonzero(is_train)

    @staticmethod
    def _classes(y: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(class labels, each row's class index, rows per class)."""
        y = column_or_1d(np.asarray(y))
        if len(y) != n:
            raise ValueError(f"X has {n} samples but y has {len(y)}")
        check_no_missing(y, "y")
        check_label_types(y, "y")
        classes, y_idx = np.unique(y, return_inverse=True)
        return classes, y_idx, np.bincount(y_idx, minlength=len(classes))

    def _warn_small(self, classes: np.ndarray, counts: np.ndarray, below: int,
                    consequence: str) -> None:
        """Warn about the classes with fewer than ``below`` rows."""
        short = [(c, int(k)) for c, k in zip(classes.tolist(), counts.tolist(), strict=True)
                 if k < below]
        if short:
            listed = ", ".join(f"{c!r} ({k})" for c, k in short)
            bound = "at most" if below > self.n_per_class else "fewer than"
            warnings.warn(
                f"{len(short)} class(es) have {bound} n_per_class={self.n_per_class} examples: "
                f"{consequence}: {listed}",
                FewShotWarning,
                stacklevel=external_stacklevel(),
            )

    def _draws(self, y_idx: np.ndarray, counts: np.ndarray
               ) -> Iterator[tuple[np.ndarray, np.random.Generator]]:
        """(training mask, the draw's generator) per draw."""
        n = len(y_idx)
        rng = check_random_state(self.random_state)
        # One seed per draw, taken up front, so draw i does not depend on test_size.
        seeds = rng.randint(np.iinfo(np.int32).max, size=self.n_splits)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for seed in seeds:
            draw_rng = np.random.default_rng(int(seed))
            order = draw_rng.permutation(n)
            # Stable sort of the shuffled rows by class; rank within class = shuffled position.
            by_class = order[np.argsort(y_idx[order], kind="stable")]
            rank = np.empty(n, dtype=np.int64)
            rank[by_class] = np.arange(n) - np.repeat(starts, counts)
            yield rank < self.n_per_class, draw_rng
