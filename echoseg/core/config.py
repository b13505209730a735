"""Resolved configuration: defaults < --config file < explicit CLI options < --set overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from echoseg.core.errors import UserError
from echoseg.core.runs import Run

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of option names to values."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config {p}: file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"--config {p}: not a text file (not valid UTF-8)") from None
    except OSError as exc:
        raise UserError(f"--config {p}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise UserError(f"--config {p}: not valid YAML/JSON ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {p}: expected a mapping of option names to values")
    return {_norm(k): v for k, v in data.items()}


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """Parse repeated ``--set key=value`` (values read as YAML scalars: 3, 0.1, true, [1,2])."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value")
        try:
            out[_norm(key)] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[_norm(key)] = raw
    return out


def _norm(key: Any) -> str:
    return str(key).strip().replace("-", "_")


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, (str, Path)) and not isinstance(value, str):
        return str(value)
    return value


CONFIG_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def config_name_or_file(config: str | Path | None, model_config: str) -> tuple[Path | None, str]:
    """Split ``--config NAME|FILE`` into (option file, model config name).

    ``--config`` names a model config (``tiny``, ``base``, ``rn50``...) unless it is an option file: a path ending
    in .yaml/.yml/.json, or one that exists. Without ``--config`` the model config is ``model_config``
    (``--model-config``).

    Returns:
        ``(file, model_config)``: the option file (None when ``--config`` is a name or absent) and the model
        config name to use.
    """
    if config is None:
        return None, model_config
    p = Path(config)
    if p.suffix.lower() in CONFIG_FILE_SUFFIXES or p.exists():
        return p, model_config
    return None, str(config)


def resolve_config(
    params: dict[str, Any],
    explicit: set[str],
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
) -> dict[str, Any]:
    """Merge a command's option values with a config file and ``--set`` overrides.

    Args:
        params: the command's option values (defaults or as given), keyed by option name.
        explicit: names of options the user gave on the command line; a config file does not override them.
        config_file: optional YAML/JSON file.
        sets: ``key=value`` strings, which override everything.
    Returns:
        The resolved configuration (recorded in run.json).
    """
    resolved = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}
    known = sorted(params)
    layers = []
    if config_file is not None:
        layers.append((load_config_file(config_file), f"--config {config_file}", True))
    if sets:
        layers.append((parse_sets(sets), "--set", False))
    for values, source, respect_explicit in layers:
        for key, value in values.items():
            if key not in params:
                raise UserError(f"{source}: unknown option {key!r} (known: {', '.join(known)})")
            if respect_explicit and key in explicit:
                continue
            resolved[key] = _coerce(key, value, params[key], source)
    return resolved


def _opts(names) -> str:
    """``--a, --b and --c`` for option names ``a``, ``b``, ``c`` (underscores become dashes)."""
    flags = ["--" + n.replace("_", "-") for n in names]
    return flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + " and " + flags[-1]


def resumed_config(
    resume: str | Path,
    command: str,
    explicit: set[str],
    given: dict[str, Any],
    allowed: Sequence[str],
    *,
    ignored: Iterable[str] = ("resume", "out"),
    same_ok: bool = False,
    requires: tuple[str, type, str] | None = None,
) -> dict[str, Any]:
    """The configuration of the run to ``--resume``, with the options that may change on resume applied.

    A resumed run keeps its own configuration (from its run.json); options given on the command line either may
    change (``allowed``: their values replace the run's) or are refused.

    Args:
        resume: the run directory given to ``--resume``.
        command: the command that resumes it (``train``, ``synth train``...); the run must be one of its runs.
        explicit: names of the options given on the command line.
        given: the options' values (a ``Path`` is recorded resolved, as a string).
        allowed: the options that may change, in the order the error message lists them.
        ignored: bookkeeping options that are neither checked nor recorded (``resume``, ``out``...).
        same_ok: accept an option outside ``allowed`` whose value equals the run's own; otherwise any such option
            is refused.
        requires: ``(key, type, what)``: the run's configuration must hold ``key`` of ``type``, else the run.json
            "has no <what> configuration".
    Raises:
        UserError: not a run of ``command``, no usable configuration, or an option that may not change.
    """
    record = Run.load(resume)
    if record.get("command") != command:
        raise UserError(f"--resume {resume}: that run is '{record.get('command')}', not '{command}'")
    cfg = dict(record.get("config") or {})
    if requires is not None:
        key, kind, what = requires
        if not isinstance(cfg.get(key), kind):
            raise UserError(f"--resume {resume}: run.json has no {what} configuration")
    refused = []
    for key in sorted(set(explicit) - set(ignored)):
        value = given.get(key)
        value = str(Path(value).resolve()) if isinstance(value, Path) else value
        if key in allowed:
            cfg[key] = value
        elif not same_ok:
            refused.append(key)
        elif cfg.get(key) != value:
            raise UserError(f"--resume {resume}: --{key.replace('_', '-')} {value!r} differs from the run's "
                            f"{cfg.get(key)!r} (only {_opts(allowed)} may change)")
    if refused:
        raise UserError(f"--resume takes the run's own options; drop {', '.join(_opts([k]) for k in refused)} "
                        f"(only {_opts(allowed)} may change)")
    return cfg


class StageConfig:
    """Mixin for a stage's dataclass configuration: a JSON-serialisable round trip through run.json."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a resolved CLI configuration, ignoring keys that are not fields (CLI-only options)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in values.items() if k in names})


def check_all(checks: list[tuple[bool, str]]) -> None:
    """Raise a UserError with the message of the first check that failed."""
    for ok, message in checks:
        if not ok:
            raise UserError(message)
