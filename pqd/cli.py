"""``python -m pqd <command>``: the one small entry point each Snakemake rule calls.

Every command takes its settings as one JSON object (``--params``), exactly the
``params`` Snakemake tracks for the rule, so what reruns a job and what the job
sees are the same thing. User-fixable failures end in a single ``pqd: error:`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from pqd.errors import PqdError

COMMANDS: dict[str, Callable[[argparse.Namespace], object]] = {}


def command(fn: Callable[[argparse.Namespace], object]) -> Callable[[argparse.Namespace], object]:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))
    torch.set_num_interop_threads(1)


@command
def cmd_data(a: argparse.Namespace) -> object:
    from pqd.data import prepare

    spec = json.loads(a.params)
    return prepare(spec["name"], spec["spec"], spec["root"], a.output)


@command
def cmd_dense(a: argparse.Namespace) -> object:
    from pqd.stages import run_dense

    return {"accuracy": run_dense(json.loads(a.params), a.data, a.output, a.checkpoint or None)["accuracy"]}


@command
def cmd_stage(a: argparse.Namespace) -> object:
    from pqd.stages import run_stage

    return {"accuracy": run_stage(a.letter, json.loads(a.params), a.input, a.data, a.output, a.teacher)["accuracy"]}


@command
def cmd_deploy(a: argparse.Namespace) -> object:
    from pqd.measure import deploy

    return deploy(a.input, a.output)


@command
def cmd_evaluate(a: argparse.Namespace) -> object:
    from pqd.checkpoint import write_json
    from pqd.measure import evaluate
    from pqd.stages import data_for

    params = json.loads(a.params)
    res = evaluate(a.input, data_for(params, a.data), params["runtime"], a.onnx or None, a.threads)
    write_json(a.output, res)
    return {"accuracy": res["accuracy"]}


@command
def cmd_latency(a: argparse.Namespace) -> object:
    from pqd.checkpoint import write_json
    from pqd.measure import latency

    res = latency(a.input, a.dense, json.loads(a.params), a.onnx or None, a.dense_onnx or None)
    write_json(a.output, res)
    return {"speedup": res["speedup_vs_dense_fp32"], "median_ms": res["model"]["median_ms"]}


@command
def cmd_export(a: argparse.Namespace) -> object:
    from pqd.runtimes import export_onnx

    return export_onnx(a.input, a.output)


@command
def cmd_report(a: argparse.Namespace) -> object:
    from pqd.report import pipeline_report

    rep = pipeline_report(a.experiment, a.pipeline, a.input, a.eval, a.latency, a.dense_eval, a.output)
    return {k: rep[k] for k in ("accuracy", "size_ratio", "speedup")}


@command
def cmd_summary(a: argparse.Namespace) -> object:
    from pqd.report import summary

    summary(a.reports, a.csv, a.md, a.plot)
    return {"pipelines": len(a.reports)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pqd", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=sorted(COMMANDS))
    for flag in ("--params", "--input", "--output", "--data", "--checkpoint", "--teacher", "--letter", "--dense",
                 "--eval", "--latency", "--dense-eval", "--experiment", "--pipeline", "--csv", "--md", "--plot",
                 "--onnx", "--dense-onnx"):
        p.add_argument(flag)
    p.add_argument("--reports", nargs="*", default=[])
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        _threads(a.threads)
        out = COMMANDS[a.command](a)
    except PqdError as e:
        print(f"pqd: error: {e}", file=sys.stderr)
        return 2
    print(f"pqd {a.command}: {json.dumps(out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
