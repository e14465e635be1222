"""Run every benchmark in `benchmarks/` in one go and write `results.json` plus a markdown table.

    python benchmarks/run_all.py                          # quick profile, 3 repeats, all benchmarks
    python benchmarks/run_all.py --profile full           # the sizes the issues quote (SD 2.1 scale: long on CPU)
    python benchmarks/run_all.py --only degradation,infer --repeats 5 --output /tmp/bench.json
    python benchmarks/run_all.py --list                   # the benchmark table and each profile's arguments

Each benchmark script (degradation, model_size, train_step, infer, evaluate, quickstart_seeds) prints one JSON object; this runner
starts it as a subprocess of the same interpreter (`sys.executable`, working directory = the repository root) once
per repeat, takes the last JSON object on its stdout, and summarises every numeric leaf across the repeats as
median, min and max (the spread) and the number of runs that reported it. Per run it also records the wall time
and the peak resident set size of the benchmark's process tree (`os.wait4` on the child: Linux reports the
largest `ru_maxrss` over the child and every descendant it waited for, so the scripts' own per-preset
subprocesses count). Linux carries the parent's own peak over into a child's `ru_maxrss` at exec, so this runner
imports nothing heavy before the runs (the device is probed in a subprocess); when `run_benchmarks` is called from
a big process (a notebook with torch loaded), values up to that process's peak, recorded as `rss_floor_mb`, are
not the child's own.

Our choices:
- Warm-up: the scripts that time something warm up inside their own process (degradation, train_step, infer,
  evaluate), so a cold extra run would only add time; for them every repeat counts and the spread is
  process-to-process. A spec with `warmup_run=True` (model_size: only its build time is timed) gets one extra,
  discarded run first.
- Profiles: "quick" uses tiny sizes so the whole run takes minutes on a 2-core CPU; "full" uses the scripts'
  defaults plus the SD 2.1-scale (random weights) measurements, meant for a GPU machine or a patient CPU.
- Device: `--device auto` (default) picks "cuda" when torch sees one, else "cpu"; the resolved name replaces
  `{device}` in each profile's arguments (model_size has none: it builds on CPU/meta).
- A benchmark that fails (non-zero exit, timeout, no JSON) is recorded with the last lines of its stderr, its
  remaining repeats are skipped, the others still run, and the exit code is 1.
- The markdown table leaves out setup numbers (batch sizes, thread counts, ...) and the per-sample lists that a
  script also summarises itself; `results.json` keeps every run's full output.
Both files are written atomically (temporary file in the same folder, then `os.replace`).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script and its arguments per profile (`{device}` is replaced by the resolved device)."""

    name: str
    script: str  # relative to benchmarks/ (or absolute)
    quick: tuple[str, ...]
    full: tuple[str, ...]
    warmup_run: bool = False  # True: one discarded run first (the script does not warm up itself)
    description: str = ""

    def argv(self, profile: str, device: str) -> list[str]:
        if profile not in ("quick", "full"):
            raise ValueError(f"unknown profile {profile!r}; expected 'quick' or 'full'")
        return [a.replace("{device}", device) for a in getattr(self, profile)]

    @property
    def path(self) -> Path:
        return BENCH_DIR / self.script


SPECS: tuple[Benchmark, ...] = (
    Benchmark("degradation", "degradation.py",  # positional: batch iterations preset size device
              quick=("8", "2", "daefr", "128", "{device}"), full=("8", "3", "daefr", "512", "{device}"),
              description="images/s of the batched torch degradation vs a per-image OpenCV loop"),
    Benchmark("model_size", "model_size.py", quick=("--presets", "tiny"), full=("--presets", "tiny", "sd21"),
              warmup_run=True, description="parameter counts per component (sd21 built on the meta device)"),
    Benchmark("train_step", "train_step.py",
              quick=("--steps", "2", "--warmup", "1", "--device", "{device}"),
              full=("--steps", "5", "--warmup", "2", "--sd21", "--device", "{device}"),
              description="seconds per training step (G + D phases) and peak memory"),
    Benchmark("infer", "infer.py",
              quick=("--batches", "1", "--repeats", "2", "--refs", "1", "--device", "{device}"),
              full=("--scale", "tiny", "sd21", "--batches", "1", "4", "--repeats", "3", "--device", "{device}"),
              description="inference seconds per face per stage, batch 1 and 4, bf16 vs fp32 PSNR"),
    Benchmark("evaluate", "evaluate.py",
              quick=("num_images=4", "size=64", "batch_size=4", "iterations=1", "device={device}"),
              full=("num_images=16", "size=256", "batch_size=16", "iterations=2", "device={device}"),
              description="images/s of the IQA metric suite, batched vs per image"),
    Benchmark("quickstart_seeds", "quickstart_seeds.py",
              quick=("--seeds", "0,1", "--steps", "2", "--vae-steps", "2", "--vre-steps", "3", "--device", "{device}"),
              full=("--seeds", "0,1,2", "--device", "{device}"),
              description="the quickstart's claims across training seeds: gains, 95% intervals, verdicts, minutes"),
    Benchmark("quickstart_levers", "quickstart_levers.py",
              quick=("--levers", "base,ema", "--steps", "2", "--vae-steps", "2", "--vre-steps", "3",
                     "--device", "{device}"),
              full=("--device", "{device}"),
              description="small-scale recipe levers scored on the validation split: gains, intervals, verdicts"),
)

# Leaf names that describe the setup rather than measure it: kept in results.json, left out of the table.
SETUP_KEYS = frozenset({
    "batch", "batch_size", "iterations", "image_size", "size", "resolution", "references", "num_references",
    "num_images", "refs", "threads", "torch_threads", "cv2_threads", "cpu_count", "cpus", "warmup_steps",
    "timed_steps", "lora_rank", "prompt_tokens", "load_average", "cores", "target"})
_UNITS = [  # (pattern on the metric path, unit): first match wins
    (r"images_per_s$", "images/s"), (r"_per_s$", "1/s"), (r"seconds_per_face", "s/face"),
    (r"(seconds|_s|_s_median)$", "s"), (r"_gb$", "GB"), (r"_mb$", "MB"), (r"speedup$", "x"),
    (r"(trainable|frozen|total|params)$", "params")]
_LABEL_KEYS = ("name", "scale", "variant", "preset", "batch", "goal")  # label list items by these instead of their index


# ----------------------------------------------------------------------------------------------- running


def parse_last_json(stdout: str) -> dict | None:
    """The last JSON object on `stdout` whose opening brace starts a line (compact or indented), else None."""
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"^\{", stdout, flags=re.MULTILINE)]
    for start in reversed(starts):
        try:
            obj, _ = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session: its subprocesses go too
        else:
            proc.kill()
    except ProcessLookupError:
        pass


def _wait(proc: subprocess.Popen, timeout: float | None) -> tuple[int, float | None, bool]:
    """Reap `proc`: (exit code, peak RSS in MB of it and its waited-for descendants or None, timed out)."""
    if not hasattr(os, "wait4"):  # not POSIX: no rusage of one child
        try:
            return proc.wait(timeout), None, False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return proc.wait(), None, True
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    while True:
        blocking = deadline is None or timed_out
        pid, status, usage = os.wait4(proc.pid, 0 if blocking else os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            _kill_group(proc)
            timed_out = True
        else:
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits on the reaped pid again
    scale = 2**20 if sys.platform == "darwin" else 2**10  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, usage.ru_maxrss / scale, timed_out


def run_once(cmd: Sequence[str], timeout: float | None = None, cwd: Path = ROOT) -> dict:
    """Run `cmd`; {"returncode", "wall_s", "peak_rss_mb", "timed_out", "stdout", "stderr"}.

    Output goes to temporary files, not pipes, so a chatty child can never block on a full pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, cwd=cwd, start_new_session=True)
        try:
            rc, peak, timed_out = _wait(proc, timeout)
        except BaseException:  # Ctrl-C etc.: the child is in its own session and would not get the signal
            _kill_group(proc)
            proc.wait()
            raise
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return {"returncode": rc, "wall_s": wall, "peak_rss_mb": peak, "timed_out": timed_out,
                "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}


def _failure(run: dict, tail_lines: int) -> str | None:
    """None when `run` succeeded with a JSON object, else a message with the last lines of its stderr."""
    if run["timed_out"]:
        why = f"timed out after {run['wall_s']:.0f} s"
    elif run["returncode"] != 0:
        rc = run["returncode"]
        why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
    elif run["result"] is None:
        why = "no JSON object on stdout"
    else:
        return None
    tail = run["stderr"].strip().splitlines()[-tail_lines:]
    return why + ("\n" + "\n".join(tail) if tail else "")


def run_benchmarks(specs: Sequence[Benchmark], repeats: int = 3, profile: str = "quick", device: str = "cpu",
                   timeout: float | None = None, log: Callable[[str], None] | None = None,
                   tail_lines: int = 15) -> dict[str, dict]:
    """Run each spec `repeats` times (plus a discarded warm-up run where the spec asks); {name: entry} with the
    command, status ("ok" / "failed"), error, per-run wall time / peak RSS / JSON result, and the summary."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out: dict[str, dict] = {}
    for spec in specs:
        if not spec.path.is_file():
            raise FileNotFoundError(f"benchmark {spec.name!r}: script not found: {spec.path}")
        cmd = [sys.executable, str(spec.path), *spec.argv(profile, device)]
        entry: dict = {"script": str(spec.path.relative_to(ROOT) if spec.path.is_relative_to(ROOT) else spec.path),
                       "args": cmd[2:], "status": "ok", "error": None, "rss_floor_mb": _self_peak_mb(),
                       "warmup": None, "runs": []}
        plan = (["warm-up"] if spec.warmup_run else []) + [f"run {i + 1}/{repeats}" for i in range(repeats)]
        for what in plan:
            run = run_once(cmd, timeout)
            run["result"] = parse_last_json(run["stdout"])
            record = {"wall_s": round(run["wall_s"], 3), "peak_rss_mb": run["peak_rss_mb"] and round(run["peak_rss_mb"], 1)}
            error = _failure(run, tail_lines)
            log(f"[{spec.name}] {what}: {run['wall_s']:.1f} s, peak RSS {record['peak_rss_mb']} MB"
                + (f" -- FAILED: {error.splitlines()[0]}" if error else ""))
            if error:
                entry.update(status="failed", error=error, failed_run={**record, "returncode": run["returncode"]})
                break
            if what == "warm-up":
                entry["warmup"] = record
            else:
                entry["runs"].append({**record, "result": run["result"]})
        entry["summary"] = aggregate([{"process": {"wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"]},
                                       **r["result"]} for r in entry["runs"]])
        out[spec.name] = entry
    return out


# ------------------------------------------------------------------------------------------- aggregation


def _self_peak_mb() -> float | None:
    """This process's own peak RSS: a child's reported peak is never below it (see the module docstring)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def flatten(obj: object, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON value by dotted path; list items are `[i]`, or `[scale=..,batch=..]` for dicts
    that name themselves. Booleans, strings and nulls are not numbers here."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return {}
    if isinstance(obj, (int, float)):
        return {prefix: obj}
    items: list[tuple[str, object]] = []
    if isinstance(obj, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in obj.items()]
    elif isinstance(obj, list):
        labels = [",".join(f"{k}={v[k]}" for k in _LABEL_KEYS if isinstance(v, dict) and isinstance(v.get(k), (str, int)))
                  for v in obj]
        if "" in labels or len(set(labels)) < len(labels):  # items that do not name themselves apart: indices
            labels = [str(i) for i in range(len(obj))]
        items = [(f"{prefix}[{label}]", v) for label, v in zip(labels, obj)]
    return {path: x for key, v in items for path, x in flatten(v, key).items()}


def aggregate(results: Sequence[dict]) -> dict[str, dict[str, float]]:
    """{path: {"median", "min", "max", "n"}} over the runs' numeric leaves (n = runs that reported the path)."""
    values: dict[str, list[float]] = {}
    for result in results:
        for path, x in flatten(result).items():
            values.setdefault(path, []).append(x)
    return {path: {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}
            for path, xs in values.items()}


def unit_of(path: str) -> str:
    """A unit guessed from the metric's name (our naming conventions), "" when none fits."""
    for pattern, unit in _UNITS:
        if re.search(pattern, path):
            return unit
    return ""


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(results: dict) -> str:
    """A markdown report of a run_all results dict: one row per benchmark metric, a FAILED row per failure."""
    m = results.get("machine", {})
    versions = m.get("packages") or {}
    gpu = f", {m['cuda_device']}" if m.get("cuda_device") else ""
    machine = (f"{m.get('cpu_model') or m.get('machine')}, {m.get('cpu_count')} cores, {m.get('ram_gb')} GB RAM{gpu}; "
               f"python {m.get('python')}, torch {versions.get('torch')}, diffusers {versions.get('diffusers')}; "
               f"commit {(results.get('git_commit') or 'unknown')[:12]}; {results.get('created')}")
    title = f"# Benchmarks: profile {results.get('profile')}, {results.get('repeats')} repeats, {results.get('device')}"
    head = [title, "", machine, "",
            "| benchmark | metric | median | spread (min - max) | n | unit |", "|---|---|---|---|---|---|"]
    rows = []
    for name, entry in results.get("benchmarks", {}).items():
        if entry["status"] != "ok":
            rows.append(f"| {name} | FAILED | | | | {_cell(entry['error'] or '')} |")
        for path, s in entry.get("summary", {}).items():
            leaf = path.rsplit(".", 1)[-1]
            if leaf in SETUP_KEYS or re.search(r"\[\d+\]$", path):
                continue
            rows.append(f"| {name} | {_cell(path)} | {_fmt(s['median'])} | {_fmt(s['min'])} - {_fmt(s['max'])} "
                        f"| {s['n']} | {unit_of(path)} |")
    return "\n".join(head + rows) + "\n"


# --------------------------------------------------------------------------------------- machine and files


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD's commit hash read from the .git folder (no git binary needed), None outside a checkout."""
    git = root / ".git"
    if git.is_file():  # worktree / submodule: "gitdir: <path>"
        text = _read(git) or ""
        git = (root / text.partition("gitdir:")[2].strip()).resolve()
    head = (_read(git / "HEAD") or "").strip()
    if not head.startswith("ref:"):
        return head or None
    ref = head[4:].strip()
    common = git / ((_read(git / "commondir") or ".").strip())
    for base in (git, common):
        value = _read(base / ref)
        if value:
            return value.strip()
    for line in (_read(common / "packed-refs") or "").splitlines():
        if line.endswith(" " + ref):
            return line.split()[0]
    return None


def machine_info() -> dict:
    """Platform, CPU model, cores, RAM, python / package versions, torch threads and CUDA device (if any)."""
    cpuinfo = _read(Path("/proc/cpuinfo")) or ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), None)
    meminfo = _read(Path("/proc/meminfo")) or ""
    ram_kb = next((int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemTotal:")), None)
    packages = {}
    for dist in ("torch", "torchvision", "diffusers", "transformers", "accelerate", "numpy", "opencv-python",
                 "opencv-python-headless", "opencv-contrib-python", "pyiqa"):
        try:
            packages[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": model or platform.processor(),
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "ram_gb": round(ram_kb / 2**20, 1) if ram_kb else None, "python": platform.python_version(),
            "packages": packages, "torch_threads": None, "cuda_device": None, "cuda_version": None}
    try:
        import torch
    except ImportError:
        return info
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_results(results: dict, output: Path) -> Path:
    """results.json at `output` and the markdown table next to it (same name, .md); the markdown's path.
    Both texts are built before either file is touched, so a result that cannot be serialised changes nothing."""
    text = json.dumps(results, indent=1) + "\n"
    table = markdown_table(results)
    md = output.with_suffix(".md")
    write_atomic(output, text)
    write_atomic(md, table)
    return md


# ---------------------------------------------------------------------------------------------------- CLI


def _resolve_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; asked in a subprocess so this process stays small."""
    if device != "auto":
        return device
    probe = "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    answer = run.stdout.strip().splitlines()[-1:] if run.returncode == 0 else []
    return answer[0] if answer in (["cuda"], ["cpu"]) else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=["quick", "full"], default="quick")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per benchmark (default 3)")
    p.add_argument("--only", default="", help="comma-separated benchmark names (default: all; see --list)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="device passed to the benchmarks (auto: cuda when torch sees one, else cpu)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed (default none)")
    p.add_argument("--output", type=Path, default=BENCH_DIR / "results.json",
                   help="results JSON (default benchmarks/results.json); the markdown goes next to it as .md")
    p.add_argument("--list", action="store_true", help="print the benchmarks and their arguments, then exit")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - {s.name for s in SPECS})
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(s.name for s in SPECS)}")
    specs = [s for s in SPECS if not names or s.name in names]
    if args.list:
        for s in specs:
            print(f"{s.name:12s} {s.script:16s} {s.description}")
            print(f"{'':12s} quick: {' '.join(s.quick)}")
            print(f"{'':12s} full:  {' '.join(s.full)}")
        return 0
    device = _resolve_device(args.device)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    benchmarks = run_benchmarks(specs, args.repeats, args.profile, device, args.timeout)
    results = {"created": created, "profile": args.profile, "repeats": args.repeats, "device": device,
               "total_wall_s": round(time.perf_counter() - start, 1),
               "git_commit": git_commit(), "machine": machine_info(), "benchmarks": benchmarks,
               "failed": [n for n, e in benchmarks.items() if e["status"] != "ok"]}
    md = write_results(results, args.output)
    print(markdown_table(results))
    print(f"wrote {args.output} and {md}", file=sys.stderr)
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
