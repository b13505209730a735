"""Reading per-sample metric tables and pairing two of them sample by sample.

A table is a CSV file or a run directory holding ``per_sample.csv`` (docs/architecture.md, "Data contract":
``sample_id, image, structure, prompt, dice, iou, hd95``); a directory with the ``metrics.csv`` of the published
Synthetic Boost layout works too.
Samples are matched on a key: ``sample_id`` by default, the columns named by ``key``, or what ``key_regex``
extracts from one key column. Pairing is checked, never assumed: duplicate keys are an error, more than
``max_unpaired`` unpaired keys is an error unless allowed, and rows whose metric is NaN/inf are dropped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoseg.core.errors import UserError
from echoseg.core.stats.labels import run_labels

METRIC_FILES = ("per_sample.csv", "metrics.csv")
DEFAULT_KEY = "sample_id"
MAX_UNPAIRED = 0.01
KEY = "__key__"  # internal column holding the pairing key


@dataclass
class MetricsTable:
    """One per-sample metrics file, read."""

    path: Path
    label: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class KeySpec:
    """How samples are identified: key columns and an optional regex applied to the (single) key column."""

    columns: tuple[str, ...] = ()
    regex: str | None = None

    def describe(self) -> str:
        cols = ",".join(self.columns) if self.columns else f"{DEFAULT_KEY} (else the first column)"
        return cols + (f" ~ /{self.regex}/" if self.regex else "")


@dataclass
class Pairing:
    """Two tables paired on their key: the paired values and the bookkeeping of what was left out."""

    label_a: str
    label_b: str
    path_a: str
    path_b: str
    metric: str
    key: str
    n_a: int
    n_b: int
    n_paired: int
    only_a: int
    only_b: int
    dropped_nonfinite: int
    data: pd.DataFrame  # columns: __key__, a, b, and the group-by columns
    examples_unpaired: list[str] = field(default_factory=list)

    @property
    def unpaired_fraction(self) -> float:
        total = self.n_paired + self.only_a + self.only_b
        return (self.only_a + self.only_b) / total if total else 0.0

    def info(self) -> dict[str, Any]:
        """The pairing counts as a JSON-ready dict."""
        return {
            "a": self.label_a, "b": self.label_b, "path_a": self.path_a, "path_b": self.path_b,
            "metric": self.metric, "key": self.key, "rows_a": self.n_a, "rows_b": self.n_b,
            "paired": self.n_paired, "only_a": self.only_a, "only_b": self.only_b,
            "unpaired_fraction": self.unpaired_fraction, "dropped_nonfinite": self.dropped_nonfinite,
            "used": len(self.data), "examples_unpaired": self.examples_unpaired,
        }


def parse_columns(text: str | None) -> tuple[str, ...]:
    """Split a comma-separated column list (``"structure,prompt"``) into names."""
    if not text:
        return ()
    return tuple(c.strip() for c in str(text).split(",") if c.strip())


def resolve_metrics_file(path: str | Path) -> Path:
    """The CSV file behind ``path``: the file itself, or a run directory's ``per_sample.csv`` (or ``metrics.csv``)."""
    p = Path(path)
    if p.is_dir():
        for name in METRIC_FILES:
            if (p / name).is_file():
                return p / name
        raise UserError(f"{p}: directory holds no {' or '.join(METRIC_FILES)}")
    if not p.exists():
        raise UserError(f"{p}: file not found")
    return p


def read_table(path: str | Path, label: str | None = None) -> MetricsTable:
    """Read a per-sample metrics CSV (or a run directory's) into a :class:`MetricsTable`."""
    csv = resolve_metrics_file(path)
    try:
        frame = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{csv}: not a readable CSV file ({first})") from None
    if frame.empty:
        raise UserError(f"{csv}: no rows")
    return MetricsTable(path=csv, label=label or str(path), frame=frame)


def _key_frame(table: MetricsTable, spec: KeySpec) -> tuple[pd.DataFrame, str]:
    """The table with a ``__key__`` column added (and the regex's named groups as columns), and the key used."""
    df = table.frame
    cols = list(spec.columns)
    if not cols:
        cols = [DEFAULT_KEY] if DEFAULT_KEY in df.columns else []
        if not cols:
            if spec.regex is None:
                raise UserError(
                    f"{table.path}: no {DEFAULT_KEY!r} column; name the key with --key COLS, or extract it with "
                    f"--key-regex (applied to the first column, {df.columns[0]!r})"
                )
            cols = [str(df.columns[0])]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        columns = ", ".join(map(str, df.columns))
        raise UserError(f"{table.path}: no key column {missing[0]!r} (--key; columns: {columns})")
    df = df.copy()
    used = ",".join(cols) + (f" ~ /{spec.regex}/" if spec.regex else "")
    if spec.regex is None:
        key = df[cols[0]].astype(str)
        for c in cols[1:]:
            key = key + "|" + df[c].astype(str)
        df[KEY] = key.to_numpy()
        return df, used
    if len(cols) != 1:
        raise UserError(f"--key-regex applies to one key column; --key names {len(cols)} ({','.join(cols)})")
    pattern = compile_key_regex(spec.regex)
    source = df[cols[0]].astype(str)
    wrapped = pattern.pattern if pattern.groups else f"({pattern.pattern})"
    parts = source.str.extract(wrapped, expand=True)
    unmatched = parts.isna().all(axis=1)
    if unmatched.any():
        first = source[unmatched].iloc[0]
        raise UserError(
            f"{table.path}: --key-regex {spec.regex!r} does not match {int(unmatched.sum())} of {len(df)} values of "
            f"column {cols[0]!r} (first: {first!r})"
        )
    parts = parts.fillna("")
    df[KEY] = parts.astype(str).agg("/".join, axis=1).to_numpy()
    for name in pattern.groupindex:  # named groups become columns usable by --group-by
        df[name] = parts[name].to_numpy()
    return df, used


def compile_key_regex(regex: str) -> re.Pattern:
    """Compile ``--key-regex`` (UserError when it is not a valid regular expression)."""
    try:
        return re.compile(regex)
    except re.error as exc:
        raise UserError(f"--key-regex {regex!r}: not a valid regular expression ({exc})") from None


def _metric_values(df: pd.DataFrame, metric: str, path: Path) -> np.ndarray:
    if metric not in df.columns:
        raise UserError(f"{path}: no metric column {metric!r} (--metric; columns: {', '.join(map(str, df.columns))})")
    raw = df[metric]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna() & (raw.astype(str).str.strip().str.lower() != "nan")
    if bad.any():
        raise UserError(f"{path}: column {metric!r} holds non-numeric values (first: {raw[bad].iloc[0]!r})")
    return values.to_numpy(dtype=float)


def _check_duplicates(df: pd.DataFrame, path: Path, spec: KeySpec) -> None:
    dup = df[KEY].duplicated(keep=False)
    if dup.any():
        first = df.loc[dup, KEY].iloc[0]
        raise UserError(
            f"{path}: {int(df[KEY][dup].nunique())} key(s) occur more than once (first: {first!r}; key: "
            f"{spec.describe()}); name more --key columns (e.g. sample_id,prompt) or a finer --key-regex"
        )


def pair_tables(
    a: MetricsTable,
    b: MetricsTable,
    *,
    metric: str = "dice",
    key: KeySpec | None = None,
    group_by: tuple[str, ...] = (),
    allow_unpaired: bool = False,
    max_unpaired: float = MAX_UNPAIRED,
) -> Pairing:
    """Pair two tables on their key and return the paired metric values.

    Args:
        a: the reference table (differences are ``b - a``).
        b: the table compared with it.
        metric: the metric column to compare.
        key: how samples are identified (default: ``sample_id``).
        group_by: columns to group results by; taken from ``a`` (from ``b`` where ``a`` lacks them).
        allow_unpaired: accept more than ``max_unpaired`` unpaired keys.
        max_unpaired: largest accepted fraction of keys present in only one table.
    Raises:
        UserError: missing metric/key/group column, duplicate keys, no common key, too many unpaired keys.
    """
    key = key or KeySpec()
    (fa, used_a), (fb, used_b) = _key_frame(a, key), _key_frame(b, key)
    va, vb = _metric_values(fa, metric, a.path), _metric_values(fb, metric, b.path)
    _check_duplicates(fa, a.path, key)
    _check_duplicates(fb, b.path, key)
    left = pd.DataFrame({KEY: fa[KEY].to_numpy(), "a": va})
    right = pd.DataFrame({KEY: fb[KEY].to_numpy(), "b": vb})
    for col in group_by:
        if col in fa.columns:
            left[col] = fa[col].astype(str).to_numpy()
        elif col in fb.columns:
            right[col] = fb[col].astype(str).to_numpy()
        else:
            raise UserError(f"--group-by {col!r}: no such column in {a.path} or {b.path}")
    merged = left.merge(right, on=KEY, how="outer", indicator=True, sort=False)
    only_a = int((merged["_merge"] == "left_only").sum())
    only_b = int((merged["_merge"] == "right_only").sum())
    both = merged[merged["_merge"] == "both"].drop(columns="_merge")
    examples = merged.loc[merged["_merge"] != "both", KEY].head(5).astype(str).tolist()
    if both.empty:
        raise UserError(
            f"{a.path} and {b.path}: no key in common (key: {key.describe()}; e.g. {fa[KEY].iloc[0]!r} vs "
            f"{fb[KEY].iloc[0]!r}); check --key/--key-regex"
        )
    pairing = Pairing(
        label_a=a.label, label_b=b.label, path_a=str(a.path), path_b=str(b.path), metric=metric,
        key=used_a if used_a == used_b else f"{used_a} | {used_b}", n_a=len(fa), n_b=len(fb),
        n_paired=len(both), only_a=only_a, only_b=only_b,
        dropped_nonfinite=0, data=both, examples_unpaired=examples,
    )
    if pairing.unpaired_fraction > max_unpaired and not allow_unpaired:
        raise UserError(
            f"{a.path} vs {b.path}: {only_a + only_b} of {len(merged)} keys ({100 * pairing.unpaired_fraction:.1f}%) "
            f"are unpaired ({only_a} only in A, {only_b} only in B; e.g. {examples[0]!r}); more than "
            f"{100 * max_unpaired:g}% - check --key/--key-regex, or pass --allow-unpaired"
        )
    finite = np.isfinite(both["a"].to_numpy()) & np.isfinite(both["b"].to_numpy())
    pairing.dropped_nonfinite = int((~finite).sum())
    pairing.data = both[finite].reset_index(drop=True)
    for col in group_by:
        pairing.data[col] = pairing.data[col].fillna("(missing)")
    return pairing


def pair_runs(
    baseline: str | Path,
    others: list[str | Path],
    *,
    metric: str = "dice",
    key: KeySpec | None = None,
    group_by: tuple[str, ...] = (),
    allow_unpaired: bool = False,
) -> list[Pairing]:
    """Read ``baseline`` and each of ``others`` and pair each other table with the baseline.

    Tables are labelled by run (:func:`~echoseg.core.stats.labels.run_labels`: the run's name, else model, prompt
    and strategy from its run.json); files outside run directories by the parts of their paths that differ.
    """
    paths = [baseline, *others]
    labels = run_labels(paths)
    tables = [read_table(p, label) for p, label in zip(paths, labels, strict=True)]
    return [
        pair_tables(tables[0], t, metric=metric, key=key, group_by=group_by, allow_unpaired=allow_unpaired)
        for t in tables[1:]
    ]
