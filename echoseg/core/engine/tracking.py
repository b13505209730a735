"""Experiment trackers: ``--report-to tensorboard|wandb|mlflow`` through accelerate's tracker integration.

A run that names trackers (``report_to`` in its configuration) gets an accelerator built with
``log_with=<trackers>`` and ``project_dir=<run>/trackers`` (see ``make_accelerator``); :func:`attach` hands the
accelerator to the run, and every row the run appends to metrics.jsonl (``Run.log_metrics``) is also logged to the
trackers: its numeric fields, at the row's ``step`` or ``epoch``. The trackers start at the first row (so a run that
fails on bad input before its first epoch leaves no tracker files) with the run's configuration, flattened to
scalars, and finish when the run closes, whether it completed, failed or was interrupted. Only the main process logs.

Everything stays inside the run directory and nothing needs the network:

- tensorboard: event files in ``<run>/trackers/echoseg/`` (``tensorboard --logdir runs/``); a resumed run appends a
  new event file there and discards the steps its checkpoint did not keep (``purge_step``).
- wandb: offline mode unless ``WANDB_MODE`` is set (``wandb sync <run>/trackers/wandb/offline-run-*`` uploads it
  later), files in ``<run>/trackers/wandb/``; the wandb run id is the echoseg run id, so a resumed run continues it.
- mlflow: a file store ``<run>/trackers/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set (experiment ``echoseg``;
  ``MLFLOW_ALLOW_FILE_STORE=true`` is set for it, which MLflow 3 asks for); a resumed run continues the same mlflow
  run (its id is kept in run.json under ``trackers``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echoseg.core.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from echoseg.core.runs import Run

TRACKERS = ("tensorboard", "wandb", "mlflow")
TRACKER_DIR = "trackers"
PROJECT = "echoseg"
STEP_KEYS = ("step", "epoch")


def parse_report_to(values: str | Iterable[str] | None, option: str = "--report-to") -> list[str]:
    """The tracker names in ``values`` (repeated and/or comma-separated; ``none`` names nothing), in order, once.

    Raises:
        UserError: a name that is not one of :data:`TRACKERS`.
    """
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    names: list[str] = []
    for item in items:
        for part in str(item).split(","):
            name = part.strip().lower()
            if name in ("", "none"):
                continue
            if name not in TRACKERS:
                raise UserError(f"{option}: unknown tracker {part.strip()!r} (choose from {', '.join(TRACKERS)}, "
                                "or none)")
            if name not in names:
                names.append(name)
    return names


def _available(name: str) -> bool:
    # deferred: accelerate pulls in torch.distributed; its checks are the ones its tracker filter applies
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    return {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
            "mlflow": is_mlflow_available}[name]()


def check_report_to(values: str | Iterable[str] | None, option: str = "--report-to") -> list[str]:
    """:func:`parse_report_to`, and each tracker's package must be installed (else a UserError naming the extra)."""
    names = parse_report_to(values, option)
    for name in names:
        if not _available(name):
            raise UserError(f"{option} {name}: the {name} package is not installed; install it with "
                            f"pip install 'echoseg[{name}]' (or pip install {name})")
    return names


def requested(run: Run) -> list[str]:
    """The trackers the run's configuration names (``report_to``), checked as :func:`check_report_to` does."""
    return check_report_to((run.record.get("config") or {}).get("report_to"))


def accelerator_kwargs(run: Run | None) -> dict[str, Any]:
    """``log_with`` and ``project_dir`` for the ``Accelerator`` of ``run`` (empty when it names no tracker)."""
    names = requested(run) if run is not None else []
    if not names:
        return {}
    return {"log_with": names, "project_dir": str(run.path / TRACKER_DIR)}


def attach(run: Run | None, accelerator: Any) -> None:
    """Give ``run`` the trackers of ``accelerator`` (built with :func:`accelerator_kwargs`): its metrics rows go to
    them from now on. Nothing to do without trackers, on a process that does not write the run, or without a run."""
    if run is None or not run.writer or not accelerator.is_main_process:
        return
    names = requested(run)
    if not names:
        return
    previous = getattr(run, "trackers", None)
    if previous is not None:  # a second accelerator in the same run: the earlier trackers end here
        previous.finish()
    run.trackers = Trackers(run, accelerator, names)


def flatten_config(values: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str | None]:
    """``values`` with nested dicts flattened to dotted keys and lists written as JSON strings: what every tracker
    (tensorboard hparams in particular) accepts."""
    flat: dict[str, bool | int | float | str | None] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def row_values(row: dict[str, Any]) -> tuple[int | None, dict[str, float | int]]:
    """The step of a metrics row (its ``step``, else its ``epoch``) and its numeric fields (booleans as 0/1)."""
    step_key = next((k for k in STEP_KEYS if isinstance(row.get(k), int) and not isinstance(row.get(k), bool)), None)
    step = int(row[step_key]) if step_key is not None else None
    values: dict[str, float | int] = {}
    for key, value in row.items():
        if key == step_key:
            continue
        if isinstance(value, bool):
            values[key] = int(value)
        elif isinstance(value, (int, float)):
            values[key] = value
    return step, values


class Trackers:
    """The trackers of one run: started at its first metrics row, fed every row, finished when the run closes."""

    def __init__(self, run: Run, accelerator: Any, names: list[str]) -> None:
        self.run = run
        self.accelerator = accelerator
        self.names = names
        self.started = False

    def log(self, row: dict[str, Any]) -> None:
        """Log the numeric fields of one metrics.jsonl row at its step (starting the trackers at the first row)."""
        step, values = row_values(row)
        if not self.started:
            self._start(step)
        if values:
            self.accelerator.log(values, step=step)

    def _start(self, first_step: int | None) -> None:
        run = self.run
        folder = run.path / TRACKER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = dict(run.record.get("trackers") or {})
        init: dict[str, dict[str, Any]] = {}
        if "tensorboard" in self.names and not run.fresh and first_step is not None:
            init["tensorboard"] = {"purge_step": first_step}  # a resumed run drops the steps it repeats
        if "wandb" in self.names:
            init["wandb"] = _wandb_kwargs(run, folder)
        if "mlflow" in self.names:
            init["mlflow"] = _mlflow_kwargs(run, folder, record.get("mlflow_run_id"))
        config = {"run.command": run.record.get("command"), "run.id": run.record.get("run_id"),
                  "run.dir": str(run.path.resolve()), **flatten_config(run.record.get("config") or {})}
        self.started = True  # before init: a tracker that fails to start is still finished on close
        self.accelerator.init_trackers(PROJECT, config=None, init_kwargs=init)
        for tracker in self.accelerator.trackers:
            tracker.store_init_configuration(_new_params(tracker, config) if tracker.name == "mlflow" else config)
        record.update({"report_to": self.names, "dir": TRACKER_DIR})
        if "mlflow" in self.names:
            active = self.accelerator.get_tracker("mlflow", unwrap=True)
            record["mlflow_run_id"] = getattr(getattr(active, "info", None), "run_id", None)
        run.update(trackers=record)
        run.log(f"reporting metrics to {', '.join(self.names)} (in {folder})")

    def finish(self) -> None:
        """Close every tracker (flush tensorboard, end the wandb and mlflow runs); safe to call twice.

        ``accelerator.end_training()`` is not used: it also destroys the process group, which the other processes
        of a multi-process run may still be using when the main process closes its run.
        """
        if not self.started:
            return
        self.started = False
        for tracker in list(self.accelerator.trackers):
            try:
                tracker.finish()
            except Exception as exc:  # a tracker that cannot close must not hide the run's own outcome
                self.run.log(f"warning: could not close the {tracker.name} tracker ({exc})", style="yellow")
        self.accelerator.trackers.clear()


def _wandb_kwargs(run: Run, folder: Path) -> dict[str, Any]:
    """wandb.init arguments: offline unless WANDB_MODE says otherwise, files in the run, id = the run's id."""
    kwargs: dict[str, Any] = {"dir": str(folder), "name": run.path.name, "id": run.record.get("run_id"),
                              "resume": "allow"}
    if not os.environ.get("WANDB_MODE"):
        kwargs["mode"] = "offline"
    return kwargs


def _new_params(tracker: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``config`` the mlflow run does not hold yet: MLflow params cannot change, and a resumed run
    continues its mlflow run with options that may differ (``--epochs``; run.json records each resume's own)."""
    # deferred: mlflow is an optional extra, loaded only when a run reports to it
    import mlflow

    held = mlflow.get_run(tracker.tracker.info.run_id).data.params
    return {k: v for k, v in config.items() if k not in held}


def _mlflow_kwargs(run: Run, folder: Path, run_id: str | None) -> dict[str, Any]:
    """MLflowTracker arguments; the tracking store is a folder of the run unless MLFLOW_TRACKING_URI names one."""
    # deferred: mlflow is an optional extra, loaded only when a run reports to it
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        # MLflow 3 keeps the file store but refuses it unless asked: it is the store that needs no server or database
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((folder / "mlruns").resolve().as_uri())
    kwargs: dict[str, Any] = {"run_name": run.path.name}
    if run_id and not run.fresh:
        kwargs["run_id"] = run_id
    return kwargs
