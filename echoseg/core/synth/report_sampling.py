"""Entity sets for synthetic reports: SynCXR's balanced sampling with a frequency cap, or the natural frequencies.

Each report draws its entities category by category (one value of a single-valued category such as ``view``; ``k``
distinct values of a NER category). A running frequency ``f(e)`` counts the reports drawn so far that hold entity
``e``:

- ``balanced`` (SynCXR): a value is drawn uniformly from its category's inventory; when ``f(e) >= tau_max`` it is
  re-drawn while the rest of the report's set stays, until an entity under the cap comes up. Re-drawing until an
  eligible entity comes up is the same as one draw from the eligible entities, which is what the code does (so it
  never loops); each capped entity that was re-drawn is counted (``redraws``). After a report's set is complete,
  ``f(e)`` of each of its entities rises by one. No entity is drawn more than ``tau_max`` times.
- ``natural`` (the paper's ablation): a value is drawn with the probability of its real frequency (its inventory
  count), with no cap, so the long tail of the real reports carries over.

The default cap is the smallest with which every category can fill every report: ``max_c ceil(count * k_c / |V_c|)``
(``V_c`` the values of category ``c``, ``k_c`` the values a report takes from it). A lower cap is allowed: once every
value of a category is at the cap (or already in the report), later reports take fewer values of it, or none, and
``short`` counts those reports per category (two views, ``--count 200`` and ``--tau-max 60``: 120 reports name a
view, 80 none). Draws use one ``numpy.random.default_rng(seed)`` in a fixed order (reports, then categories in
inventory order), so a seed gives the same sets on every machine.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from echoseg.core.errors import UserError
from echoseg.core.synth.entities import Entity, Inventory

SAMPLING = ("balanced", "natural")


@dataclass
class SampledSets:
    """The entity set of every report (category order), the capped re-draws of each, and the settings used."""

    sets: list[list[Entity]]
    redraws: list[int]
    mode: str
    tau_max: int | None
    per_category: dict[str, int]
    short: dict[str, int]  # category -> reports that took fewer of its values than per_category (all capped)

    def frequencies(self) -> Counter:
        """f(e) over every report."""
        return Counter(e for s in self.sets for e in s)


def per_category(inventory: Inventory, k: int) -> dict[str, int]:
    """How many values each report draws from each category: 1 from a single-valued one, else ``k`` (at most all)."""
    return {c: (min(k, len(inventory.counts[c])) if c in inventory.multi else 1) for c in inventory.categories}


def minimal_tau_max(inventory: Inventory, count: int, k: int = 1) -> int:
    """The smallest cap with which ``count`` reports can each take their values from every category."""
    need = per_category(inventory, k)
    return max(1, *(math.ceil(count * need[c] / len(inventory.counts[c])) for c in inventory.categories))


def sample_sets(inventory: Inventory, count: int, *, mode: str = "balanced", tau_max: int | None = None,
                k: int = 1, seed: int = 0) -> SampledSets:
    """Draw the entity sets of ``count`` reports (see the module docstring).

    Args:
        inventory: the real reports' entities.
        count: reports to draw.
        mode: ``balanced`` (uniform draws, capped at ``tau_max``) or ``natural`` (real frequencies, no cap).
        tau_max: the cap (balanced only; None: :func:`minimal_tau_max`).
        k: values per report of a multi-valued (NER) category.
        seed: random seed.

    Raises:
        UserError: bad settings.
    """
    if mode not in SAMPLING:
        raise UserError(f"--sampling must be one of {', '.join(SAMPLING)}, got {mode!r}")
    if count < 1:
        raise UserError(f"--count must be >= 1, got {count}")
    if k < 1:
        raise UserError(f"--per-category must be >= 1, got {k}")
    if tau_max is not None and tau_max < 1:
        raise UserError(f"--tau-max must be >= 1, got {tau_max}")
    if mode == "natural" and tau_max is not None:
        raise UserError("--tau-max caps --sampling balanced; natural sampling draws the real frequencies uncapped")
    cap = None
    if mode == "balanced":
        cap = minimal_tau_max(inventory, count, k) if tau_max is None else int(tau_max)
    need = per_category(inventory, k)
    rng = np.random.default_rng(seed)
    pools = []
    for c in inventory.categories:
        values = sorted(inventory.counts[c])
        weights = np.array([inventory.counts[c][v] for v in values], np.float64)
        p = np.full(len(values), 1.0 / len(values)) if mode == "balanced" else weights / weights.sum()
        pools.append((c, values, p))
    freq: Counter = Counter()
    sets, redraws, short = [], [], Counter()
    for _ in range(count):
        chosen: list[Entity] = []
        capped = 0
        for c, values, p in pools:
            taken: set[str] = set()
            for _ in range(need[c]):
                v = values[int(rng.choice(len(values), p=p))]
                over = cap is not None and freq[(c, v)] >= cap
                if over or v in taken:
                    ok = np.array([(cap is None or freq[(c, u)] < cap) and u not in taken for u in values])
                    if not ok.any():  # every value left is capped: this report takes fewer of the category
                        short[c] += 1
                        break
                    capped += int(over)
                    q = p * ok
                    v = values[int(rng.choice(len(values), p=q / q.sum()))]
                taken.add(v)
                chosen.append((c, v))
        freq.update(chosen)
        sets.append(chosen)
        redraws.append(capped)
    return SampledSets(sets, redraws, mode, cap, need, dict(short))


def frequency_table(inventory: Inventory, freq: Counter) -> dict[str, dict[str, int]]:
    """``{category: {value: f}}`` over every inventory entity (0 where never drawn) and any other counted one."""
    table = {c: {v: int(freq.get((c, v), 0)) for v in sorted(inventory.counts[c])} for c in inventory.categories}
    for (c, v), n in freq.items():
        table.setdefault(c, {}).setdefault(v, int(n))
    return table


def spread(table: dict[str, dict[str, int]]) -> dict:
    """Max, min and max/min frequency, overall and per category (an entity at 0 counts as 1 in the ratio)."""
    def stats(values: list[int]) -> dict:
        hi, lo = max(values), min(values)
        return {"max": hi, "min": lo, "max_min_ratio": round(hi / max(lo, 1), 4),
                "never": sum(v == 0 for v in values)}

    every = [n for vals in table.values() for n in vals.values()]
    return {**stats(every or [0]), "categories": {c: stats(list(v.values())) for c, v in table.items() if v}}
