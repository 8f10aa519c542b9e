"""Seeded, stratified choice of split members.

All functions return *positions* into the `labels` array they are given, sorted ascending, so that the same
seed gives the same split on every machine (numpy's Generator streams are stable across platforms).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import DataError


def _quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class counts proportional to `counts` that sum to exactly `n` (largest-remainder rounding)."""
    exact = counts * n / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    # Hand the leftover items to the classes that lost most in rounding; ties go to the lower class index.
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: n - quotas.sum()]] += 1
    return quotas


def stratified_choice(labels: np.ndarray, n: int, rng: np.random.Generator,
                      groups: np.ndarray | None = None) -> np.ndarray:
    """Choose `n` positions of `labels` with each class represented in proportion to its frequency.

    `groups` (optional, one id per item) keeps items of one group together: a group is taken whole or not at
    all, so exact duplicates cannot end up on both sides of a split. Classes then get their quota as closely as
    whole groups allow (exactly, when the class has enough single items).
    """
    labels = np.asarray(labels)
    if not 0 <= n <= len(labels):
        raise DataError(f"cannot choose {n} items from a pool of {len(labels)}")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    chosen = []
    for cls, quota in enumerate(_quotas(counts, n)):
        members = rng.permutation(np.flatnonzero(inverse == cls))
        if groups is None:
            chosen.append(members[:quota])
        else:
            chosen.append(_take_whole_groups(members, np.asarray(groups)[members], quota))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _take_whole_groups(members: np.ndarray, member_groups: np.ndarray, quota: int) -> np.ndarray:
    """Walk `members` in their (shuffled) order, taking each one's whole group while it still fits the quota."""
    taken: list[int] = []
    seen: set[int] = set()
    for group in member_groups:
        if group in seen:
            continue
        seen.add(group)
        block = members[member_groups == group]
        if len(taken) + len(block) <= quota:
            taken.extend(block.tolist())
        if len(taken) == quota:
            break
    return np.asarray(taken, dtype=np.int64)


def vtab1k_split(labels: np.ndarray, seed: int, n_train: int = 800, n_val: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """VTAB-1k: a stratified sample of `n_train + n_val` items, of which a stratified `n_val` become val.

    Returns (train positions, val positions); their union is the train800val200 set.
    """
    rng = np.random.default_rng(seed)
    pool = stratified_choice(labels, n_train + n_val, rng)
    val = pool[stratified_choice(np.asarray(labels)[pool], n_val, rng)]
    return np.setdiff1d(pool, val), val


def carve(labels: np.ndarray, fractions: Sequence[float], seed: int) -> tuple[list[np.ndarray], list[int]]:
    """Split every class by `fractions`, one held-out part per fraction, the rest staying in the first part.

    Each class gives round(fraction * size) items to each held-out part, at least one where the class is big
    enough to appear in every part, and always keeps at least one item in the first part (training must see
    every class). Returns ([rest, held_1, held_2, ...], classes too small to appear in every part).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    too_small = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        size = len(members)
        held = [int(f * size + 0.5) for f in fractions]
        if size > len(fractions):
            held = [max(1, h) for h in held]
        else:
            too_small.append(cls.item())
        while sum(held) > size - 1:  # keep one for training: trim the largest held-out part first
            held[int(np.argmax(held))] -= 1
        start = size - sum(held)
        parts[0].append(members[:start])
        for k, h in enumerate(held, start=1):
            parts[k].append(members[start:start + h])
            start += h
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts], too_small


FIXED_SAMPLE_SEED = 0  # a fixed sample never depends on a run's seed: every seed is scored on the same images


def fixed_sample(labels: np.ndarray, n: int) -> np.ndarray:
    """Positions of a stratified sample of `n` of `labels`, the same on every call and machine (e.g. a test split
    cut to a size that evaluates quickly, identical for every seed of an experiment)."""
    if n >= len(labels):
        return np.arange(len(labels))
    return stratified_choice(labels, n, np.random.default_rng(FIXED_SAMPLE_SEED))

