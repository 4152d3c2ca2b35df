# Helpers shared by the rules: experiment lookup, file layout, tracked params, resources.
# No workflow logic lives here beyond naming files and cutting params out of the config.
import os
import shlex
import sys
from functools import lru_cache, wraps
from pathlib import Path

from pqd import capability as pqd_capability
from pqd import codehash as pqd_codehash
from pqd import pipeline as pqd_pipeline
from pqd.catalog import DATASET_KINDS, RUNTIMES, target_module

RESULTS = config["results"]
CACHE = f"{config['data_root']}/pqd-cache"
# Logs and per-job timings live inside the results directory, so runs with different `results`
# never write over each other's logs; a dataset's decoding log lives beside its cache.
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
MACHINE_CPUS = os.cpu_count() or 1


def command_line():
    """Snakemake's command line as Snakemake reads it (profiles applied), or None when the
    workflow is not run from the command line. While the Snakefile loads, Snakemake has not yet
    chosen its executor (workflow.local_exec is still true under --executor slurm)."""
    import contextlib
    import io

    from snakemake.cli import parse_args

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return parse_args(sys.argv[1:])[1]
    except (SystemExit, Exception):
        return None


CLI = command_line()
LOCAL_RUN = CLI is None or getattr(CLI, "executor", None) in (None, "local", "dryrun", "touch")

# A local run never oversubscribes the physical cores: every rule books `cpus` equal to its
# threads, and a local run offers at most this machine's cores (--resources cpus=N overrides).
# A cluster run is limited by the cluster, never by the submitting machine's cores.
if LOCAL_RUN and "cpus" not in workflow.global_resources:
    workflow.register_resource("cpus", MACHINE_CPUS)


def fail(e):
    """Re-raise a PqdError as a one-line WorkflowError."""
    raise WorkflowError(f"pqd: error: {e}") from None


def guarded(fn):
    """Input/params functions: a PqdError becomes the one-line WorkflowError."""

    @wraps(fn)  # Snakemake reads the signature to know which arguments to pass
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PqdError as e:
            fail(e)

    return wrapper


@lru_cache(maxsize=None)
@guarded
def exp_cfg(exp):
    return pqd_config.experiment(config, exp, SCHEMA)


@guarded
def chain_of(pipeline):
    return pqd_pipeline.parse_pipeline(pipeline)


def byo_checkpoint(exp):
    """dense.checkpoint of `exp` ([] when training from scratch); a missing file is a config error."""
    path = exp_cfg(exp)["dense"]["checkpoint"]
    if path and not Path(path).is_file():
        fail(f"dense.checkpoint {path!r} not found (experiment {exp}); fix the path or set it to null to train")
    return path or []


@lru_cache(maxsize=None)
def backbone_verdicts(exp):
    """What the backbone of ``exp`` can take, probed once per entry, width and runtime (pqd/capability.py)."""
    cfg = exp_cfg(exp)
    return guarded(pqd_capability.verdicts)(cfg["backbone_spec"], cfg["width"], cfg["measure"]["runtime"])


def check_capability(exp, chain):
    """Refuse, before any job runs, a stage of ``chain`` (dense included) that the backbone cannot take."""
    stages = [pqd_pipeline.stage_spec(chain[:i]) for i in range(len(chain) + 1)]
    why = pqd_capability.refusal(exp_cfg(exp)["backbone_spec"], stages, backbone_verdicts(exp))
    if why:
        fail(why)


def check_pipeline(exp, pipeline):
    """Everything about ``pipeline`` of ``exp`` that can be known before a job runs: the names,
    the stage order, each stage's fit to the backbone (probed), its teacher, the runtime's fit to
    the deployed form."""
    of = guarded(pqd_pipeline.control_of)(pipeline)
    if of is not None:
        # Only what the control trains (stage f over of's epochs and rates): checking all of ``of``
        # would recurse when of's own distillation is taught by this very control.
        guarded(pqd_config.control_params)(exp_cfg(exp), exp, of)
        guarded(pqd_config.eval_params)(exp_cfg(exp))
        check_capability(exp, "f")
        return
    chain = chain_of(pipeline)
    for i in range(len(chain) + 1):
        guarded(pqd_config.stage_params)(exp_cfg(exp), exp, chain[:i])
        if i:
            teacher = guarded(pqd_config.teacher_pipeline)(exp_cfg(exp), chain[:i])
            if teacher is not None and teacher.startswith(pqd_pipeline.CONTROL_PREFIX):
                check_pipeline(exp, teacher)
    guarded(pqd_config.eval_params)(exp_cfg(exp))
    check_capability(exp, chain)


def requested_targets():
    """The targets on Snakemake's command line. The DAG is not known while the Snakefile loads,
    and an error raised later, inside an input function, reaches the user wrapped in a traceback."""
    return list(getattr(CLI, "targets", None) or [])


def check_target(path):
    """One-line error now for a target under the results directory that names a bad experiment
    or pipeline."""
    rel = Path(os.path.relpath(path, RESULTS)).parts
    if not rel or rel[0] in ("..", "logs", "benchmarks"):
        return
    exp_cfg(rel[0])
    if len(rel) >= 3:
        check_pipeline(rel[0], rel[1])


# Fail fast on every experiment the config names and every target asked for: Snakemake swallows
# an error raised inside an input function when the target file already exists (it then treats
# that file as a source).
for _exp in dict.fromkeys([*config["experiments"], *config["overrides"]]):
    byo_checkpoint(_exp)
    for _p in exp_cfg(_exp)["pipelines"]:
        check_pipeline(_exp, _p)
for _target in requested_targets():
    check_target(_target)


def model_file(exp, chain):
    return pqd_pipeline.model_path(RESULTS, exp, chain)


@guarded
def pipeline_model(exp, pipeline):
    """The final model of a pipeline (a chain, dense, or a ctl- control)."""
    return pqd_pipeline.pipeline_model_path(RESULTS, exp, pipeline)


@guarded
def final_chain(pipeline):
    return pqd_pipeline.final_chain(pipeline)


@guarded
def control_json(exp, of):
    return pqd_config.control_params(exp_cfg(exp), exp, chain_of(of)).to_json()


@guarded
def replicates(exp):
    """Every seed's replicate of experiment `exp` (its summary pools them); a replicate has none."""
    cfg = exp_cfg(exp)
    if cfg["experiment"] != exp:
        fail(
            f"{exp!r} is one seed's replicate; the summary over all seeds is {RESULTS}/{cfg['experiment']}/summary.csv"
        )
    return cfg["replicates"]


def data_file(wc):
    """The dataset cache of experiment ``exp``, decoded at its backbone's input size."""
    cfg = exp_cfg(wc.exp)
    return f"{CACHE}/{cfg['dataset']}-{cfg['backbone_spec'].image_size}px.pt"


@guarded
def stage_params_json(exp, chain):
    return pqd_config.stage_params(exp_cfg(exp), exp, chain).to_json()


@guarded
def eval_json(wc):
    return pqd_config.eval_params(exp_cfg(wc.exp)).to_json()


@guarded
def measure_json(wc):
    return pqd_config.measure_params(exp_cfg(wc.exp)).to_json()


# Code tracking: each job's params carry the hash of the import closure of the pqd modules it
# runs (pqd/codehash.py), so an edit reruns exactly the jobs whose code imports the edited file.
# `--track` hands the same modules to the job, which fails if it loads a module outside them.
def tracked(*modules, exp=None, runtime=False):
    """Entry modules of a job: ``modules`` plus, for an experiment, the backbone module it builds
    and (``runtime``) the module of the configured runtime, which pqd imports by name."""
    mods = set(modules)
    if exp is not None:
        cfg = exp_cfg(exp)
        mods.add(cfg["backbone_spec"].module)
        if runtime:
            mods.add(target_module(RUNTIMES.get(cfg["measure"]["runtime"]).runner))
    return ",".join(sorted(mods))


@lru_cache(maxsize=None)
def code_hash(track):
    return pqd_codehash.code_hash(track.split(","))


def resources(kind):
    """Cluster resources of a kind of job: pqd.pipeline.JOB_RESOURCES merged with the config's
    `resources.<kind>`. Profiles key on these, never on rule names."""
    return {**pqd_pipeline.JOB_RESOURCES[kind], **config.get("resources", {}).get(kind, {})}


# Helpers of single rules (kept here: the rule files hold rules only).
def dataset_track(wc):
    kind = config["datasets"][wc.dataset]["kind"]
    return tracked("pqd.data", target_module(DATASET_KINDS.get(kind).loader))


def stage_chain(spec, wc):
    return chain_of(wc.chain) if spec.letter else ""


def stage_input(spec):
    """Input function of the stage rule of ``spec``, giving data, the model after the chain's prefix, the
    teacher it names, and an imported checkpoint (dense.checkpoint) when one is set."""

    def inputs(wc):
        chain = stage_chain(spec, wc)
        if spec.letter:
            expected = pqd_pipeline.artifact_name(chain) + ".pt"
            got = f"{spec.artifact}{wc.int8}.pt"
            if got != expected:
                fail(f"{RESULTS}/{wc.exp}/{wc.chain}/{got} is not a pqd target; that model is named {expected}")
        out = {"data": data_file(wc)}
        if not spec.starts:  # a starting stage builds its own model
            out["model"] = model_file(wc.exp, chain[:-1])
        if spec.needs_teacher:
            out["teacher"] = pipeline_model(wc.exp, guarded(pqd_config.teacher_pipeline)(exp_cfg(wc.exp), chain))
        if spec.imports and byo_checkpoint(wc.exp):
            out["imported"] = byo_checkpoint(wc.exp)
        if spec.latency_curve and guarded(pqd_config.needs_curve)(exp_cfg(wc.exp), chain):
            out["curve"] = curve_file(wc.exp, chain)
        return out

    return inputs


def stage_track(spec):
    return lambda wc: tracked("pqd.runner", spec.module, exp=wc.exp)


def stage_code(spec):
    return lambda wc: code_hash(stage_track(spec)(wc))


def stage_json(spec):
    return lambda wc: stage_params_json(wc.exp, stage_chain(spec, wc))


def optional_arg(flag, key):
    return lambda wc, input: f"{flag} {shlex.quote(input[key])}" if key in input.keys() else ""


def model_track(wc):
    return tracked("pqd.measure", exp=wc.exp)


def runtime_track(wc):
    return tracked("pqd.measure", exp=wc.exp, runtime=True)


def export_track(wc):
    return tracked("pqd.runtimes", exp=wc.exp)


def export_source(wc):
    """The pipeline's fake-quantized model, when its INT8 ONNX graph is built from it: for the
    runtime's placement (pqd.catalog: int8_placement) or the backbone's export path (onnx_int8)."""
    chain = final_chain(wc.pipeline)
    cfg = exp_cfg(wc.exp)
    from_fake = (
        RUNTIMES.get(cfg["measure"]["runtime"]).int8_placement == "weighted_inputs"
        or cfg["backbone_spec"].onnx_int8 == "fake_quant"
    )
    return pipeline_model(wc.exp, wc.pipeline) if from_fake and pqd_pipeline.is_quantized(chain) else []


def export_runtime(wc):
    """``--runtime`` for the export of a quantized pipeline, whose INT8 graph is the runtime's
    (pqd.catalog: int8_placement); an FP32 graph is the same for every runtime, so switching runtime
    does not re-export it."""
    if not pqd_pipeline.is_quantized(final_chain(wc.pipeline)):
        return ""
    return f"--runtime {shlex.quote(exp_cfg(wc.exp)['measure']['runtime'])}"


def onnx_file(exp, pipeline):
    """deployed.onnx of ``pipeline`` when the configured runtime executes ONNX, else nothing."""
    if RUNTIMES.get(exp_cfg(exp)["measure"]["runtime"]).onnx:
        return rules.export_onnx.output[0].format(exp=exp, pipeline=pipeline)
    return []


def curve_file(exp, chain):
    """The latency curve of the model entering the last stage of ``chain`` (it lives beside that
    stage's output). When that model is the imported dense checkpoint, it is the same model in every
    replicate, so they all read the first seed's curve: one measurement, one architecture per
    target (three replicates timing their own curves of one import, with machine drift between
    them, chose 12, 14 and 31 MMACs for one latency target)."""
    if len(chain) == 1 and byo_checkpoint(exp):
        exp = exp_cfg(exp)["experiment"]
    return rules.latency_curve.output[0].format(exp=exp, chain=chain)


@guarded
def curve_json(wc):
    return pqd_config.curve_params(exp_cfg(wc.exp), chain_of(wc.chain)).to_json()


def reference_input(wc):
    """For a pipeline with a channel-pruning stage (s): the model that entered it (timed beside the deployed one)."""
    chain = guarded(pqd_config.latency_reference)(final_chain(wc.pipeline))
    return [] if chain is None else model_file(wc.exp, chain)


def onnx_input(wc):
    return onnx_file(wc.exp, wc.pipeline)


def dense_onnx_input(wc):
    """The dense model's deployed.onnx, for timing dense FP32 in the same runtime."""
    return onnx_file(wc.exp, "dense")


def summary_max_loss(exp):
    """report.max_loss of the experiment as the summary's --max-loss ('none': cannot be told from dense)."""
    max_loss = exp_cfg(exp)["report"]["max_loss"]
    return "none" if max_loss is None else f"{max_loss:g}"


def summary_pipelines(exp):
    """The config's pipelines plus, with `controls: true`, the equal-budget control of each."""
    cfg = exp_cfg(exp)
    pipelines = list(cfg["pipelines"])
    if cfg["controls"]:  # one per distinct budget: orders with equal epochs and lrs share theirs
        pipelines += [
            guarded(pqd_config.control_name)(cfg, p)
            for p in pipelines
            if p != "dense"
            and not p.startswith(pqd_pipeline.CONTROL_PREFIX)
            and not pqd_pipeline.STAGES.get(p[0]).starts
        ]
    return list(dict.fromkeys(pipelines))
