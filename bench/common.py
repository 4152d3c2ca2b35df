"""What the bench scripts share: the ``--smoke`` switch and its settings, the line that stamps every
printed figure with the date and the machine, Markdown table lines, and running the workflow. The scripts run as
``python bench/<name>.py`` (so this folder is on ``sys.path``); pqd itself never imports this."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable

from pqd.measure import cpu_info


def parse(ap: argparse.ArgumentParser, smoke: dict, help: str = "tiny settings, for the tests' smoke run"):
    """``ap``'s arguments plus ``--smoke``, which replaces the settings named in ``smoke`` (the
    tests run every script so, to keep it running; its figures mean nothing)."""
    ap.add_argument("--smoke", action="store_true", help=help)
    a = ap.parse_args()
    if a.smoke:
        for k, v in smoke.items():
            setattr(a, k, v)
    return a


def stamp(*context: str) -> str:
    """The first line of every script's output: when, on what CPU (ISA flags included), and with
    what settings the figures below were measured; they are compared only within one such run."""
    return "  ".join([f"# {time.strftime('%Y-%m-%d %H:%M')}", *context, str(cpu_info())])


def row(cells: Iterable) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(cols: Iterable[str]) -> str:
    """A Markdown table's header row and its rule."""
    cols = list(cols)
    return row(cols) + "\n|" + "---|" * len(cols)


ROOT = Path(__file__).resolve().parent.parent


def overlay(settings: dict) -> Path:
    """``settings`` written to a temporary config file, to merge over a script's configs."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(settings, f)  # JSON is YAML
    return Path(f.name)


def snakemake(
    targets: list[str], configs: list[Path], flags: Iterable[str] = (), cwd: Path = ROOT, capture: bool = False
) -> subprocess.CompletedProcess:
    """``snakemake -j2 FLAGS TARGETS --configfile CONFIGS`` in ``cwd`` (the repository), echoed to
    stderr; a failed workflow stops the script (with the end of its output, when ``capture`` keeps
    it). The one way every bench script runs the workflow."""
    # targets before --configfile: it takes every argument after it
    cmd = [sys.executable, "-m", "snakemake", "-j2", *flags, *targets, "--configfile", *map(str, configs)]
    print("+", " ".join(cmd), file=sys.stderr)
    res = subprocess.run(cmd, cwd=cwd, capture_output=capture, text=True)
    if res.returncode:
        raise SystemExit(
            f"snakemake failed ({res.returncode})\n" + (res.stdout or "")[-2000:] + (res.stderr or "")[-2000:]
        )
    return res
