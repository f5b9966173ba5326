"""Bootstrap confidence intervals for evaluation returns.

Method: the nonparametric *percentile* bootstrap (Efron & Tibshirani, *An Introduction to the
Bootstrap*, Chapman & Hall 1993, ch. 13). Draw ``resamples`` samples of size ``n`` with
replacement from the ``n`` episode returns, take the mean of each, and report the empirical
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means (``numpy.quantile``'s
default linear interpolation) as the interval. The point estimate is the sample mean.

Paired comparison: two policies run on the same episode seeds give returns ``a[i]`` and
``b[i]`` for the same episode ``i``. :func:`paired_bootstrap_ci` resamples episode *indices*
jointly (the pair ``(a[i], b[i])`` stays together), so the per-episode difficulty that both
returns share cancels; that equals the percentile bootstrap of the differences ``a - b``, which
is how it is computed. When the returns are positively correlated across episodes (easy
episodes are easy for both) its interval is narrower than one from independent resampling.

Every call draws from its own ``numpy.random.default_rng(rng_seed)``, so the same inputs and
``rng_seed`` give the same interval, and no global RNG state is touched (training resumes stay
exact). scipy is not a dependency of memgym (``requirements.lock``); with it,
``scipy.stats.bootstrap(..., paired=True, method="percentile")`` computes the same kind of
interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from memgym.errors import ConfigError

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 10_000
DEFAULT_RNG_SEED = 0
_BLOCK_ELEMENTS = 1_000_000  # resampled values held at once (8 MB of float64)


def _sample(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array of at least one finite number.

    Raises:
        ConfigError: ``values`` is not numeric, not 1-D, empty, or holds NaN or infinity.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be a sequence of numbers: {error}") from error
    if array.ndim != 1:
        raise ConfigError(f"{name} must be 1-D (one return per episode), got shape "
                          f"{array.shape}")
    if array.size == 0:
        raise ConfigError(f"{name} is empty: a confidence interval needs at least one episode")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} holds NaN or infinite values: {array.tolist()}")
    return array


def _check_level(level: float) -> None:
    """Raises:
    ConfigError: ``level`` is not in (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), e.g. 0.95, got {level}")


def _check_resamples(resamples: int) -> None:
    """Raises:
    ConfigError: ``resamples`` is not a positive int."""
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer) or resamples < 1:
        raise ConfigError(f"resamples must be a positive int, got {resamples!r}")


def bootstrap_means(values: ArrayLike, resamples: int = DEFAULT_RESAMPLES,
                    rng_seed: int = DEFAULT_RNG_SEED) -> np.ndarray:
    """The means of ``resamples`` bootstrap resamples of ``values`` (each of size ``n``, drawn
    with replacement), in a fixed order for a given ``rng_seed``.

    Args:
        values: Shape ``(n,)``, real numbers (e.g. one return per episode).
        resamples: How many resamples.
        rng_seed: Seed of the ``numpy.random.default_rng`` that draws the indices.

    Returns:
        Shape ``(resamples,)``, float64.

    Raises:
        ConfigError: ``values`` is not a non-empty 1-D sequence of finite numbers, or
            ``resamples`` is not a positive int.
    """
    sample = _sample(values, "values")
    _check_resamples(resamples)
    rng = np.random.default_rng(rng_seed)
    n = sample.size
    block = max(1, _BLOCK_ELEMENTS // n)  # bounds memory for long evaluations
    means = np.empty(int(resamples), dtype=np.float64)
    for start in range(0, int(resamples), block):
        stop = min(start + block, int(resamples))
        means[start:stop] = sample[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def bootstrap_ci(values: ArrayLike, level: float = DEFAULT_LEVEL,
                 resamples: int = DEFAULT_RESAMPLES,
                 rng_seed: int = DEFAULT_RNG_SEED) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile-bootstrap confidence interval.

    A constant sample (or a single value) gives a zero-width interval at its mean.

    Args:
        values: Shape ``(n,)``, real numbers, one per episode.
        level: Coverage of the interval, in (0, 1).
        resamples: Bootstrap resamples.
        rng_seed: Seed of the resampling RNG (same seed, same interval).

    Returns:
        ``(mean, low, high)`` as Python floats, ``low <= high``.

    Raises:
        ConfigError: ``values`` is not a non-empty 1-D sequence of finite numbers, ``level`` is
            not in (0, 1), or ``resamples`` is not a positive int.
    """
    sample = _sample(values, "values")
    _check_level(level)
    means = bootstrap_means(sample, resamples, rng_seed)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(sample.mean()), float(low), float(high)


def paired_bootstrap_ci(a: ArrayLike, b: ArrayLike, seeds_a: Sequence[int] | None = None,
                        seeds_b: Sequence[int] | None = None, level: float = DEFAULT_LEVEL,
                        resamples: int = DEFAULT_RESAMPLES,
                        rng_seed: int = DEFAULT_RNG_SEED) -> tuple[float, float, float]:
    """Mean paired difference ``a - b`` and its percentile-bootstrap confidence interval,
    resampling episode indices jointly (``a[i]`` and ``b[i]`` must come from the same episode).

    Two identical samples give exactly ``(0.0, 0.0, 0.0)``.

    Args:
        a: Shape ``(n,)``, real numbers: the returns of one policy, one per episode.
        b: Shape ``(n,)``, real numbers: the other policy's returns on the same episodes.
        seeds_a: Episode seeds of ``a`` in order (optional; checked against ``seeds_b``).
        seeds_b: Episode seeds of ``b`` in order (optional; checked against ``seeds_a``).
        level: Coverage of the interval, in (0, 1).
        resamples: Bootstrap resamples.
        rng_seed: Seed of the resampling RNG (same seed, same interval).

    Returns:
        ``(mean difference, low, high)`` as Python floats, ``low <= high``.

    Raises:
        ConfigError: ``a`` or ``b`` is not a non-empty 1-D sequence of finite numbers, they
            differ in length, only one of ``seeds_a`` / ``seeds_b`` is given, the seeds differ
            or do not match the returns in length, ``level`` is not in (0, 1), or
            ``resamples`` is not a positive int.
    """
    first, second = _sample(a, "a"), _sample(b, "b")
    if first.size != second.size:
        raise ConfigError(f"a paired comparison needs returns on the same episodes: a has "
                          f"{first.size}, b has {second.size}")
    if (seeds_a is None) != (seeds_b is None):
        raise ConfigError("give the episode seeds of both samples or of neither")
    if seeds_a is not None and seeds_b is not None:
        seeds_a, seeds_b = [int(s) for s in seeds_a], [int(s) for s in seeds_b]
        if len(seeds_a) != first.size or len(seeds_b) != second.size:
            raise ConfigError(f"seeds must match the returns in length: {len(seeds_a)} and "
                              f"{len(seeds_b)} seeds for {first.size} returns each")
        if seeds_a != seeds_b:
            differ = next(i for i, (x, y) in enumerate(zip(seeds_a, seeds_b, strict=True))
                          if x != y)
            raise ConfigError(f"a paired comparison needs both policies on the same seeds in "
                              f"the same order; episode {differ} has seed {seeds_a[differ]} in "
                              f"a and {seeds_b[differ]} in b")
    return bootstrap_ci(first - second, level, resamples, rng_seed)


__all__ = ["DEFAULT_LEVEL", "DEFAULT_RESAMPLES", "DEFAULT_RNG_SEED", "bootstrap_ci",
           "bootstrap_means", "paired_bootstrap_ci"]
