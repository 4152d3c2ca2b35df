"""``python -m pqd <command>``: the one small entry point each Snakemake rule calls.

Every command takes its settings as one JSON object (``--params``), exactly the ``params``
Snakemake tracks for the rule, parsed into a typed object (:mod:`pqd.params`), so what reruns
a job and what the job sees are the same thing. Each subcommand declares its own required
arguments. ``--track`` names the job's entry modules: after the command the CLI checks that
every pqd module the job loaded is covered by the code hash of those modules
(:mod:`pqd.codehash`). User-fixable failures end in a single ``pqd: error:`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional

from pqd import codehash, interrupts
from pqd.errors import PqdError
from pqd.params import CurveParams, DatasetParams, EvalParams, MeasureSettings, StageParams

Command = Callable[[argparse.Namespace], object]
Brief = Callable[[dict], object]
COMMANDS: dict[str, tuple[Command, str, tuple[tuple[str, dict], ...], Optional[Brief]]] = {}


def command(
    help: str, required: str = "", optional: str = "", writes: Optional[Brief] = None, **options: dict
) -> Callable[[Command], Command]:
    """Register ``cmd_<name>`` as subcommand ``<name>`` with its own options: ``required`` names
    the required ones and ``optional`` the optional plain ones (space-separated, ``--`` left off,
    ``dense_onnx`` is ``--dense-onnx``), each keyword another option's argparse settings. With
    ``writes``, the command returns a JSON result that :func:`main` writes to ``--output``
    (atomically) and logs as ``writes(result)``: one way for every command whose output is a JSON
    record."""
    args = tuple((f"--{name}", {"required": True}) for name in required.split())
    args += tuple((f"--{name.replace('_', '-')}", {}) for name in optional.split())
    args += tuple((f"--{name.replace('_', '-')}", kw) for name, kw in options.items())

    def deco(fn: Command) -> Command:
        COMMANDS[fn.__name__.removeprefix("cmd_")] = (fn, help, args, writes)
        return fn

    return deco


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))
    torch.set_num_interop_threads(1)


@command("decode a dataset into its uint8 tensor cache", "params output")
def cmd_data(a: argparse.Namespace) -> object:
    from pqd.data import prepare

    p = DatasetParams.from_json(a.params)
    return prepare(p.name, p.spec, p.root, a.output, p.image_size)


@command(
    "check which stages a backbone can take (run by pqd.capability while the DAG is built)",
    "params output",
    writes=lambda res: {k: v["ok"] for k, v in res.items()},
)
def cmd_probe(a: argparse.Namespace) -> object:
    from pqd.catalog import BackboneSpec
    from pqd.probe import probe

    p = json.loads(a.params)
    _threads(2)
    return probe(BackboneSpec.from_dict(p["backbone"]), p["width"], p["runtime"])


@command(
    "run one stage (dense training included) on the model after a chain's prefix",
    "params data output",
    "input teacher",
    curve={"help": "latency curve of the input model (a stage pruning to a latency target)"},
)
def cmd_stage(a: argparse.Namespace) -> object:
    from pqd.resume import job_key
    from pqd.runner import run_stage

    p = StageParams.from_json(a.params)
    _threads(p.threads)
    code = codehash.code_hash(a.track.split(",") if a.track else ["pqd.runner"])
    key = job_key(a.params, code, [a.data, a.input, a.teacher, a.curve, p.settings.get("checkpoint")])
    return {"accuracy": run_stage(p, a.data, a.output, a.input, a.teacher, resume_key=key, curve=a.curve)["accuracy"]}


@command(
    "latency of a model pruned at a grid of channel ratios, relative to the unpruned model",
    "input params output",
    writes=lambda res: {"keep": {pt["ratio"]: round(pt["keep"], 3) for pt in res["points"]}},
)
def cmd_curve(a: argparse.Namespace) -> object:
    from pqd.latency_curve import measure_curve

    p = CurveParams.from_json(a.params)
    _threads(p.measure.threads)
    return measure_curve(a.input, p)


@command("convert a pipeline's final model to its deployable form", "input output")
def cmd_deploy(a: argparse.Namespace) -> object:
    from pqd.measure import deploy

    return deploy(a.input, a.output)


@command(
    "top-1 accuracy, size and sparsity of the deployed model",
    "input data params output",
    "onnx",
    threads={"type": int, "default": 1},
    predictions={"help": "also write every test image's predicted class here (.npz)"},
    default_precision={"action": "store_true", "help": "also score an FP32 model in the runtime's default precision"},
    writes=lambda res: {"accuracy": res["accuracy"]},
)
def cmd_evaluate(a: argparse.Namespace) -> object:
    from pqd.data import data_for
    from pqd.measure import evaluate

    p = EvalParams.from_json(a.params)
    _threads(a.threads)
    return evaluate(a.input, data_for(p.data, a.data), p.runtime, a.onnx, a.threads, a.predictions, a.default_precision)


@command(
    "batch-1 latency of the deployed model against dense FP32",
    "input dense params output",
    "onnx dense_onnx",
    reference={"help": "the model that entered a latency-targeted s: timed too, in the deployed form"},
    writes=lambda res: {"speedup": res["speedup_vs_dense_fp32"], "median_ms": res["model"]["median_ms"]},
)
def cmd_latency(a: argparse.Namespace) -> object:
    from pqd.measure import latency

    p = MeasureSettings.from_json(a.params)
    _threads(p.threads)
    return latency(a.input, a.dense, p, onnx_path=a.onnx, dense_onnx=a.dense_onnx, reference=a.reference)


@command(
    "export the deployed model to ONNX (QDQ for INT8)",
    "input output",
    source={"help": "the fake-quantized model it was converted from (INT8 graphs built from it)"},
    runtime={"help": "the runtime that will run it: decides the INT8 graph (pqd.catalog.RUNTIMES)"},
)
def cmd_export(a: argparse.Namespace) -> object:
    from pqd.runtimes import export_onnx

    return export_onnx(a.input, a.output, a.source, a.runtime)


@command("report.json of one pipeline", "experiment pipeline input eval latency dense-eval output")
def cmd_report(a: argparse.Namespace) -> object:
    from pqd.report import pipeline_report

    rep = pipeline_report(a.experiment, a.pipeline, a.input, a.eval, a.latency, a.dense_eval, a.output)
    return {k: rep[k] for k in ("accuracy", "size_ratio", "speedup")}


@command(
    "summary table and frontier plots of an experiment",
    "csv md plot",
    "pairwise pairwise_md",
    reports={"nargs": "+", "required": True},
    html={"help": "the verdict and headline table as HTML (for snakemake --report)"},
    max_loss={
        "default": "1.0",
        "help": "top-1 points a recommended pipeline may lose against dense "
        "(report.max_loss); 'none': only what cannot be told from dense",
    },
)
def cmd_summary(a: argparse.Namespace) -> object:
    from pqd.report import summary

    max_loss = None if a.max_loss.lower() in ("none", "null") else float(a.max_loss)
    summary(a.reports, a.csv, a.md, a.plot, a.pairwise, a.pairwise_md, max_loss=max_loss, html_out=a.html)
    return {"pipelines": len(a.reports)}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other pqd error
        self.exit(2, f"pqd: error: {self.prog}: {message}; see {self.prog} --help\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m pqd", description=__doc__.splitlines()[0])
    p.add_argument("--track", default="", help="comma-separated entry modules the job's code hash covers")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (_, help_text, args, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        for flag, kw in args:
            sp.add_argument(flag, **kw)
    return p


def check_tracked(track: str) -> None:
    """Fail when the job loaded a pqd module that its code hash does not cover."""
    if not track:
        return
    missing = codehash.untracked(sys.modules, track.split(","))
    if missing:
        raise PqdError(
            f"internal: this job ran pqd modules its code hash does not track ({', '.join(missing)}); "
            "add them to the rule's tracked entry modules (rules/common.smk, tracked())"
        )


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    interrupts.stop_cleanly_on_signals()
    interrupts.watch_workflow()
    try:
        fn, _, _, writes = COMMANDS[a.command]
        out = fn(a)
        if writes is not None:
            from pqd.checkpoint import write_json

            write_json(a.output, out)
            out = writes(out)
        check_tracked(a.track)
    except PqdError as e:
        print(f"pqd: error: {e}", file=sys.stderr)
        return 2
    except interrupts.Interrupted as e:
        print(
            f"pqd: error: {a.command} interrupted by {e.signal.name}{e.why}; its output was not written "
            "(rerun to redo it)",
            file=sys.stderr,
        )
        return 128 + e.signal.value
    print(f"pqd {a.command}: {json.dumps(out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
