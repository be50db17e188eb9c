"""What every benchmark script shares: the machine it ran on, where its results go, and how they are printed.

Importing this module makes the repository's modules importable (the scripts live one folder down), so a bench
script starts with `import common` and then imports from the repo as usual.

A benchmark run measures one or more ROWS (e.g. one per export mode or batch size) and records them twice under
--output_dir (default results/bench/ of the repo), both append-only histories, written atomically:
  <bench>.jsonl   one JSON object per run: {bench, machine, settings, rows}
  <bench>.csv     one line per row: the row's figures plus the machine and settings columns, flattened
                  (nested keys joined with '.'); a run with new columns rewrites the header as the union
The machine record (CPU model, cores, memory, load average at start, Python and package versions, git commit,
date) lets results from different machines, or a contended run, be told apart.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

from util import atomic_write_text, git_commit  # noqa: E402

# The MLR511 keypoints and 20-video subset where docs/data.md puts them (override with the flags)
DEFAULT_KEYPOINTS = REPO_DIR / "data" / "arabic-asl-90kpts"
DEFAULT_VIDEOS = REPO_DIR / "data" / "mlr511-videos-20"
DEFAULT_CONFIG = REPO_DIR / "configs" / "arabic-asl-65kpts.yaml"
DEFAULT_OUTPUT_DIR = REPO_DIR / "results" / "bench"
PACKAGES = ("tensorflow", "tf-keras", "ai-edge-litert", "mediapipe", "numpy", "opencv-contrib-python")


# ----------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The 'model name' of /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)  # kB -> GB
    except OSError:
        pass
    return None


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask; a container may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info() -> dict:
    """The facts needed to compare a result with another machine's (nothing is imported to learn them)."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gb": memory_gb(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        **{name: package_version(name) for name in PACKAGES},
        "git_commit": git_commit(),
    }


# ----------------------------------------------------------------------------------------------- results
def flatten(record: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and tuples become comma-joined text."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(map(str, value))
        else:
            flat[name] = value
    return flat


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append flat rows to a CSV history; the header becomes the union of the old and new columns."""
    old_rows, columns = [], []
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns, old_rows = list(reader.fieldnames or []), list(reader)
    for row in rows:
        columns += [c for c in row if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(old_rows + rows)
    atomic_write_text(path, out.getvalue())


def write_results(output_dir, bench: str, machine: dict, settings: dict, rows: list[dict]) -> tuple[Path, Path]:
    """Append this run to <output_dir>/<bench>.jsonl (one object) and <bench>.csv (one line per row)."""
    output_dir = Path(output_dir)
    jsonl = output_dir / f"{bench}.jsonl"
    record = {"bench": bench, "machine": machine, "settings": settings, "rows": rows}
    history = jsonl.read_text() if jsonl.is_file() else ""
    atomic_write_text(jsonl, history + json.dumps(record, default=str) + "\n")
    csv_path = output_dir / f"{bench}.csv"
    append_csv(csv_path, [flatten({"bench": bench, **row, "machine": machine, "settings": settings}) for row in rows])
    return jsonl, csv_path


def add_output_args(ap) -> None:
    ap.add_argument("--output_dir", default=str(DEFAULT_OUTPUT_DIR),
                    help="folder of the <bench>.jsonl / <bench>.csv result histories")
    ap.add_argument("--no_write", action="store_true", help="print the figures only, write no result files")


def report(args, bench: str, machine: dict, settings: dict, rows: list[dict], columns: dict) -> dict:
    """Print the machine line and the table; write the result files unless --no_write. Returns the run record."""
    print(f"\n{bench} on {machine['cpu_model']} ({machine['usable_cores']} usable cores, load "
          f"{machine['load_average_1min']} at start), {machine['date']}, commit {machine['git_commit']}")
    print(format_table(rows, columns))
    if not args.no_write:
        for path in write_results(args.output_dir, bench, machine, settings, rows):
            print(f"appended to {path}")
    return {"bench": bench, "machine": machine, "settings": settings, "rows": rows}


# ----------------------------------------------------------------------------------------------- printing
def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_table(rows: list[dict], columns: dict) -> str:
    """Rows as an aligned text table; columns = {row key: heading} in display order."""
    cells = [list(columns.values())] + [[format_value(row.get(key)) for key in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(text.rjust(width) for text, width in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
