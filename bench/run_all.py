"""Run the benchmarks in bench/ and rewrite bench/RESULTS.md (see bench/README.md).

Usage::

    python bench/run_all.py                 # every bench/bench_*.py
    python bench/run_all.py cache           # a subset, by name (bench_cache.py -> "cache")
    python bench/run_all.py --list

Each benchmark's ``run()`` runs in its own subprocess with a time limit, so a crash or a hang in one does not stop
the others. When a subset is run, the sections of the other benchmarks already in RESULTS.md are kept.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
SECTION_RE = re.compile(r"^## (\S+)\s*$", re.M)

# Imports the benchmark file, calls run() and writes its JSON result to the file named by argv[2].
_RUNNER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bench_module", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
out = sys.argv[2]  # read now: a benchmark may call echoseg.cli.main(), which rewrites sys.argv
spec.loader.exec_module(mod)
result = mod.run()
with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, default=str)
"""


def discover() -> dict[str, Path]:
    """Benchmark name -> file, for every bench/bench_*.py."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def run_one(path: Path, timeout: float) -> dict:
    """Run one benchmark in a subprocess; on failure return a result with ``error`` set."""
    name = path.stem.removeprefix("bench_")
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-") as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(BENCH_DIR.parent),
                                                                        os.environ.get("PYTHONPATH")])))
        try:
            proc = subprocess.run([sys.executable, "-c", _RUNNER, str(path), str(out)], cwd=BENCH_DIR.parent,
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"name": name, "error": f"timed out after {timeout:g} s"}
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            return {"name": name, "error": f"exit code {proc.returncode}", "log": "\n".join(tail)}
        result = json.loads(out.read_text(encoding="utf-8"))
    missing = {"metrics", "target", "passed"} - set(result)
    if missing:
        return {"name": name, "error": f"run() result lacks {sorted(missing)}"}
    result["name"] = name
    return result


def machine() -> dict[str, str]:
    """CPU model, cores, RAM, Python/torch versions and GPU (if any)."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": str(os.cpu_count()), "ram": "?"}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        if model:
            info["cpu"] = model.group(1).strip()
        mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        if mem:
            info["ram"] = f"{int(mem.group(1)) / 2**20:.1f} GiB"
    except OSError:
        pass
    info["python"] = platform.python_version()
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none"
    except ImportError:
        info["torch"] = "not installed"
        info["gpu"] = "unknown"
    return info


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render_section(result: dict, when: str, host: str) -> str:
    """Markdown for one benchmark: metrics table, target, verdict."""
    lines = [f"## {result['name']}", ""]
    if result.get("description"):
        lines += [result["description"], ""]
    if result.get("finding") and "error" not in result:
        lines += [f"**Finding:** {result['finding']}", ""]
    lines += [f"Measured {when} on {host}.", ""]
    if "error" in result:
        lines += [f"**FAILED TO RUN**: {result['error']}", ""]
        if result.get("log"):
            lines += ["```", result["log"], "```", ""]
        return "\n".join(lines)
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result["metrics"].items()]
    verdict = "met" if result["passed"] else "**NOT met**"
    lines += ["", f"Target: {result['target']} — {verdict}.", ""]
    return "\n".join(lines)


def existing_sections(text: str) -> dict[str, str]:
    """Sections (``## name`` to the next heading) of a previous RESULTS.md, by name."""
    starts = list(SECTION_RE.finditer(text))
    return {m.group(1): text[m.start(): starts[k + 1].start() if k + 1 < len(starts) else len(text)].rstrip() + "\n"
            for k, m in enumerate(starts)}


def render(results: list[dict], info: dict[str, str], when: str, keep: dict[str, str]) -> str:
    """The whole RESULTS.md: header, machine, then one section per benchmark (sorted by name)."""
    host = f"{info['cpu']} ({info['cores']} cores), GPU {info['gpu']}"
    head = [
        "# Benchmark results", "",
        "Written by `python bench/run_all.py` (`make bench`); do not edit by hand. See bench/README.md.", "",
        f"Last updated: {when}", "",
        "| machine | |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()], "",
    ]
    sections = dict(keep)
    for r in results:
        sections[r["name"]] = render_section(r, when, host)
    body = "\n".join(sections[k].rstrip() + "\n" for k in sorted(sections))
    return "\n".join(head) + "\n" + body


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print a one-line summary each on stderr, rewrite RESULTS.md."""
    ap = argparse.ArgumentParser(description="Run echoseg benchmarks and rewrite bench/RESULTS.md.")
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. 'cache'")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per benchmark (default 1800)")
    ap.add_argument("--output", type=Path, default=RESULTS, help="results file (default bench/RESULTS.md)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)

    found = discover()
    if args.list:
        print("\n".join(found))
        return 0
    names = [n.removeprefix("bench_").removesuffix(".py") for n in args.names] or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(found)}", file=sys.stderr)
        return 2

    results = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        r = run_one(found[name], args.timeout)
        status = f"ERROR: {r['error']}" if "error" in r else ("target met" if r["passed"] else "target NOT met")
        print(f"[bench] {name}: {status}", file=sys.stderr, flush=True)
        results.append(r)

    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    keep = {}
    if args.output.is_file() and args.names:
        keep = {k: v for k, v in existing_sections(args.output.read_text(encoding="utf-8")).items() if k in found}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(args.output, render(results, machine(), when, keep))
    print(f"[bench] wrote {args.output}", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
