"""Curation inside generation (SynCXR): re-query a sample with a new seed while it looks like a known-bad image.

After the first pass has written every sample (attempt 0, its seed ``s``), each image is embedded and compared with
the known-bad exemplars by a :class:`Gate` (cosine similarity to the nearest exemplar, as ``echoseg curate --bad``
measures it; the CLI builds the gate from the curate stage, ``echoseg.core.curate.gate``). A sample whose similarity
exceeds the gate's threshold is generated again with seed ``s + t * stride`` (attempt ``t``; ``stride`` is the
number of samples, so no two attempts of any two samples share a seed), up to ``max_tries`` attempts in all, and
the first attempt at or below the threshold is kept. A sample that never gets there is **given up**: its image
leaves the data set (no manifest lists it), every attempt stays under ``rejected/`` and its record says so. A kept
sample therefore never exceeds the threshold.

With centring (the default, as in curate) embeddings are centred on the mean embedding of the first pass's images,
computed once over all processes and saved, so a resumed run compares against the same reference.

Files in the run::

    rejected/<key>_try<t>.png         every rejected attempt (attempt 0 copied before its image is replaced)
    regenerate/records.<rank>.jsonl   one JSON line per checked sample, appended by the process that checked it:
                                      key, tries, seeds, sims, kept_try, seed, bad_sim, nearest_bad, given_up
    regenerate/mean.npy               the centring mean
    regenerate.csv                    every record (main process, at the end)

Resume: a sample with a record is finished (the record is written last). Without one, its attempt 0 is
``rejected/<key>_try0.png`` when that copy exists (its image may already hold a later attempt), else its image, and
it is checked again from the start; seeds are deterministic, so the same attempts come out.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from echoseg.core.console import track
from echoseg.core.data.imaging import load_image
from echoseg.core.io import atomic_path, write_csv, write_png
from echoseg.core.runs import Run

RECORDS_DIR = "regenerate"
REJECTED_DIR = "rejected"
RECORD_COLUMNS = ["key", "tries", "given_up", "kept_try", "seed", "bad_sim", "nearest_bad", "seeds", "sims", "image"]


class Gate(Protocol):
    """Similarity of generated images to known-bad exemplars (``echoseg.core.curate.gate.BadImageGate``)."""

    name: str
    threshold: float  # a sample passes when its similarity is <= this
    center: bool  # centre embeddings on the first pass's mean
    references: list[str]  # the exemplar images

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) embeddings of grey uint8 images."""
        ...

    def nearest(self, emb: np.ndarray, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarity to the nearest exemplar, its index) per row."""
        ...


@dataclass(frozen=True)
class Sample:
    """One generated sample: its key (unique file stem), image file, first seed and files removed if given up."""

    key: str
    image: Path
    seed: int
    also: tuple[Path, ...] = ()


# images for (samples, seeds): uint8 arrays as they are written (grey (H, W) or RGB (H, W, 3))
Render = Callable[[Sequence[Sample], Sequence[int]], list[np.ndarray]]


def grey(image: np.ndarray) -> np.ndarray:
    """A generated image as the readers see it once written (RGB converted to grey as PIL does)."""
    arr = np.asarray(image, np.uint8)
    return arr if arr.ndim == 2 else np.asarray(Image.fromarray(arr).convert("L"))


def load_records(run_path: Path) -> dict[str, dict]:
    """Every finished sample's record in the run, by key (a line cut short by a crash is ignored)."""
    out: dict[str, dict] = {}
    for path in sorted((Path(run_path) / RECORDS_DIR).glob("records.*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "key" in rec:
                out[str(rec["key"])] = rec
    return out


def records_table(records: dict[str, dict]) -> pd.DataFrame:
    """The records as regenerate.csv rows (seeds and sims as JSON lists), sorted by key."""
    rows = [{**r, "seeds": json.dumps(r["seeds"]), "sims": json.dumps(r["sims"])} for r in records.values()]
    return pd.DataFrame(rows, columns=RECORD_COLUMNS).sort_values("key", kind="stable").reset_index(drop=True)


def _first_image(run_path: Path, s: Sample) -> Path:
    copy = run_path / REJECTED_DIR / f"{s.key}_try0.png"
    return copy if copy.is_file() else s.image


def _centring_mean(run: Run, state, gate: Gate, emb: np.ndarray, complete: bool) -> np.ndarray | None:
    """The saved mean, else the mean of every process's first-pass embeddings (one collective), saved."""
    if not gate.center:
        return None
    path = run.path / RECORDS_DIR / "mean.npy"
    if path.is_file():
        return np.load(path)
    if not complete:  # records without a mean: a run written with --no-center cannot be resumed with centring
        raise RuntimeError(f"{path}: missing although samples were checked")
    import torch  # deferred: heavy import, loaded only when this path runs

    dim = emb.shape[1] if emb.size else 0
    if state.num_processes > 1:
        from accelerate.utils import gather_object  # deferred: heavy import, loaded only when this path runs

        dim = max(gather_object([dim]))
    total = torch.zeros(dim + 1, dtype=torch.float64, device=state.device)
    if emb.size:
        total[:dim] = torch.from_numpy(emb.sum(0).astype(np.float64)).to(state.device)
        total[dim] = len(emb)
    if state.num_processes > 1:
        from accelerate.utils import reduce  # deferred: heavy import, loaded only when this path runs

        total = reduce(total, reduction="sum")
    mean = (total[:dim] / max(float(total[dim]), 1.0)).float().cpu().numpy()
    if state.is_main_process:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, mean)
    state.wait_for_everyone()
    return mean


@dataclass
class _Attempt:
    seed: int
    sim: float
    ref: int
    image: np.ndarray | None  # None for attempt 0 (on disk)


def _finish(run: Run, s: Sample, attempts: list[_Attempt], gate: Gate, rank: int) -> dict[str, Any]:
    """Write a checked sample's files (rejected attempts, kept image or removal) and append its record."""
    kept = next((t for t, a in enumerate(attempts) if a.sim <= gate.threshold), None)
    chosen = kept if kept is not None else int(np.argmin([a.sim for a in attempts]))
    rejected = run.path / REJECTED_DIR
    if len(attempts) > 1 or kept is None:
        first = rejected / f"{s.key}_try0.png"
        if not first.is_file():
            with atomic_path(first) as tmp:
                shutil.copyfile(s.image, tmp)
        for t, a in enumerate(attempts[1:], 1):
            if t != kept:
                write_png(rejected / f"{s.key}_try{t}.png", a.image)
        if kept is not None and kept > 0:
            write_png(s.image, attempts[kept].image)
        elif kept is None:
            for p in (s.image, *s.also):
                p.unlink(missing_ok=True)
    image = s.image if kept is not None else rejected / f"{s.key}_try{chosen}.png"
    best = attempts[chosen]
    rec = {"key": s.key, "tries": len(attempts), "given_up": kept is None, "kept_try": kept, "seed": best.seed,
           "bad_sim": round(best.sim, 6), "nearest_bad": gate.references[best.ref] if best.ref >= 0 else "",
           "seeds": [a.seed for a in attempts], "sims": [round(a.sim, 6) for a in attempts],
           "image": Path(image).relative_to(run.path).as_posix()}
    path = run.file(f"{RECORDS_DIR}/records.{rank}.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
    return rec


def regenerate_bad(run: Run, samples: Sequence[Sample], render: Render, gate: Gate, state, *, max_tries: int,
                   stride: int, batch_size: int, progress: bool = True) -> dict[str, dict]:
    """Check every sample of this process against the gate, re-querying failures (see the module notes).

    Every process calls it with the same ``samples`` (it takes its share, ``i % n == rank``); ``state`` is an
    accelerate ``PartialState``. Returns every record of the run (read after all processes have finished).
    """
    done = load_records(run.path)
    mine = list(samples)[state.process_index::state.num_processes]
    todo = [s for s in mine if s.key not in done]
    paths = [_first_image(run.path, s) for s in todo]
    batches = [list(range(i, min(i + batch_size, len(todo)))) for i in range(0, len(todo), batch_size)]
    emb_parts = [gate.embed([load_image(paths[i]) for i in b])
                 for b in (track(batches, "checking against known-bad images") if progress else batches)]
    emb = np.concatenate(emb_parts) if emb_parts else np.zeros((0, 0), np.float32)
    mean = _centring_mean(run, state, gate, emb, complete=not done)
    sims, refs = gate.nearest(emb, mean) if len(emb) else (np.zeros(0), np.zeros(0, np.int64))
    failing = []
    for i, s in enumerate(todo):
        first = _Attempt(s.seed, float(sims[i]), int(refs[i]), None)
        if first.sim <= gate.threshold:
            _finish(run, s, [first], gate, state.process_index)
        else:
            failing.append((s, [first]))
    run.log(f"known-bad gate ({gate.name}, cosine <= {gate.threshold:g} against {len(gate.references)} images): "
            f"{len(todo) - len(failing)} of this process's {len(todo)} samples pass on the first try, "
            f"{len(failing)} re-queried (up to {max_tries} tries)")
    groups = [failing[i:i + batch_size] for i in range(0, len(failing), batch_size)]
    for group in track(groups, "re-querying bad samples") if progress else groups:
        active = list(group)
        for t in range(1, max_tries):
            if not active:
                break
            seeds = [s.seed + t * stride for s, _ in active]
            images = render([s for s, _ in active], seeds)
            new_sims, new_refs = gate.nearest(gate.embed([grey(im) for im in images]), mean)
            for (_, attempts), seed, im, sim, ref in zip(active, seeds, images, new_sims, new_refs, strict=True):
                attempts.append(_Attempt(seed, float(sim), int(ref), np.asarray(im, np.uint8)))
            active = [(s, a) for s, a in active if a[-1].sim > gate.threshold]
        for s, attempts in group:
            _finish(run, s, attempts, gate, state.process_index)
    state.wait_for_everyone()
    return load_records(run.path)


def gate_summary(records: dict[str, dict], gate: Gate, max_tries: int) -> dict[str, Any]:
    """The ``regenerate`` entry of summary.json: how many samples passed first, after re-queries, or were given up."""
    recs = list(records.values())
    kept = [r for r in recs if not r["given_up"]]
    given_up = sorted(r["key"] for r in recs if r["given_up"])
    tries = pd.Series([int(r["tries"]) for r in recs], dtype=int).value_counts().sort_index()
    return {"encoder": gate.name, "threshold": gate.threshold, "center": gate.center, "max_tries": int(max_tries),
            "references": len(gate.references), "checked": len(recs),
            "first_try": sum(int(r["tries"]) == 1 and not r["given_up"] for r in recs),
            "regenerated": sum(int(r["tries"]) > 1 and not r["given_up"] for r in recs),
            "given_up": len(given_up), "given_up_keys": given_up[:100],
            "queries": int(sum(int(r["tries"]) for r in recs)),
            "tries": {str(k): int(v) for k, v in tries.items()},
            "max_kept_sim": max((float(r["bad_sim"]) for r in kept), default=None)}


def write_records(run: Run, records: dict[str, dict]) -> None:
    """regenerate.csv (main process)."""
    write_csv(run.file("regenerate.csv"), records_table(records))
