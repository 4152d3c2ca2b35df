"""Where the deployed model runs when it is measured: PyTorch eager, or the exported ONNX
file in ONNX Runtime or OpenVINO. Each runtime turns a deployed artifact into a callable
``Tensor -> Tensor``, so accuracy and latency are measured the same way for all of them.

Export keeps what training learned: the ONNX graph is traced from the converted INT8
model itself (int8 weight initializers with their per-channel scales, the activation
scales and zero points from QAT, BatchNorm already folded into the convolutions), not
re-calibrated, so pruned zeros are still integer zeros in the file.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from pqd import qat
from pqd.catalog import RUNTIMES, resolve
from pqd.checkpoint import atomic_path
from pqd.constants import input_shape
from pqd.errors import PqdError
from pqd.model_io import load_model
from pqd.models import backbone_of


class Runner:
    """A deployed model in an ONNX runtime. ``runner(x)`` returns the logits of a batch (evaluation:
    numpy in, numpy out, converted on every call). ``runner.bind(x)`` returns a zero-argument call
    that runs only the runtime's own inference on ``x``, its input set once beforehand and its
    output left in the runtime: that is what latency times, as the runtime's own benchmark tool
    (OpenVINO's ``benchmark_app``) does, so that at batch 1 on a small model the figure is not
    the cost of Python-side tensor conversion."""

    def __init__(
        self,
        run: Callable[[torch.Tensor], torch.Tensor],
        bind: Callable[[torch.Tensor], Callable[[], object]],
        precision: Optional[Callable[[tuple], str]] = None,
    ):
        self._run, self._bind, self._precision = run, bind, precision

    def precision(self, shape: tuple) -> str:
        """The inference precision the runtime chose for floating-point layers at input ``shape``
        (``f32`` unless the runtime says otherwise)."""
        return self._precision(shape) if self._precision else "f32"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        return self._bind(x)


OPSET = 17


def _register_quantized_batchnorm() -> None:
    """Teach the TorchScript exporter quantized BatchNorm(+ReLU), which pre-activation
    networks (WRN) keep as standalone INT8 ops: dequantize -> BatchNormalization (-> Relu)
    -> quantize with the op's learned output scale. The exporter maps every other
    quantized op we produce itself."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh

    def make(relu: bool):
        def symbolic(g, q_input, weight, bias, mean, var, eps, op_scale, op_zero_point):
            x, _, _, _ = sh.dequantize_helper(g, q_input)
            out = g.op("BatchNormalization", x, weight, bias, mean, var, epsilon_f=sh._get_const(eps, "f", "eps"))
            if relu:
                out = g.op("Relu", out)
            return sh.quantize_helper(g, out, op_scale, op_zero_point)

        return symbolic

    torch.onnx.register_custom_op_symbolic("quantized::batch_norm2d", make(False), OPSET)
    torch.onnx.register_custom_op_symbolic("quantized::batch_norm2d_relu", make(True), OPSET)


def export_onnx(deployed: str, output: str, source: Optional[str] = None, runtime: Optional[str] = None) -> dict:
    """Trace the deployed model (INT8 or FP32) into an ONNX file, batch dimension dynamic.

    Uses the TorchScript-based exporter. An INT8 model's graph is the one ``runtime`` runs fastest
    (:attr:`pqd.catalog.RuntimeSpec.int8_placement`; no runtime named: ``every_op``):
    ``weighted_inputs`` (OpenVINO) exports :func:`pqd.qat.weighted_inputs_graph` of the fake-quantized
    model it was converted from (``source``, the pipeline's QAT checkpoint); ``every_op`` goes the
    way its backbone's catalogue entry says (:attr:`pqd.catalog.BackboneSpec.onnx_int8`): its
    converted quantized ops mapped to QuantizeLinear/DequantizeLinear pairs around float ops (the QDQ
    format ONNX Runtime fuses into integer kernels), or, for ``fake_quant`` backbones, the
    fake-quantized model ``source`` exported as is, each FakeQuantize becoming such a pair with its
    learned scale: the same QDQ graph, reached where PyTorch has no ONNX mapping for a converted op."""
    model, meta = load_model(deployed)
    spec = backbone_of(meta)
    placement = RUNTIMES.get(runtime).int8_placement if runtime else "every_op"
    path = None
    if meta["form"] == "int8":
        path = "weighted_inputs" if placement == "weighted_inputs" else spec.onnx_int8
    if path in ("fake_quant", "weighted_inputs"):
        if not source:
            raise PqdError(
                f"the INT8 {meta['backbone']} is exported from its fake-quantized model "
                f"({'onnx_int8: fake_quant' if path == 'fake_quant' else runtime + ': ' + path} graph): "
                "pass its QAT checkpoint (--source, the pipeline's final model)"
            )
        model, src_meta = load_model(source)
        if src_meta["form"] != "qat":
            raise PqdError(
                f"{source} is {src_meta['form']}, not the fake-quantized model {deployed} was converted from"
            )
        model = (
            qat.weighted_inputs_graph(model, src_meta.get("reduce_range", True))
            if path == "weighted_inputs"
            else qat.for_export(model)
        )
    model.eval()
    _register_quantized_batchnorm()
    with atomic_path(output) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (torch.randn(*input_shape(1, spec.image_size)),),
                str(tmp),
                opset_version=OPSET,
                dynamo=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            )
        except torch.onnx.errors.OnnxExporterError as e:  # SymbolicValueError and kin
            raise PqdError(
                f"cannot export the {meta['form']} {meta['backbone']} model to ONNX: PyTorch's exporter has "
                f"no mapping for one of its ops ({str(e).splitlines()[0][:100]}); measure it with "
                "measure.runtime: torch"
            ) from None
    return {"form": meta["form"], "opset": OPSET, "int8_path": path}


def torch_runner(deployed: str, onnx_path: str | None, threads: int) -> torch.nn.Module:
    model, _ = load_model(deployed)
    model.eval()
    return model


def onnxruntime_runner(deployed: str, onnx_path: str | None, threads: int) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise PqdError("measure.runtime is 'onnxruntime' but it is not installed; pip install onnxruntime") from None
    if not onnx_path:
        raise PqdError("runtime 'onnxruntime' needs the exported deployed.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"x": np.ascontiguousarray(x.numpy())})[0])

    def bind(x: torch.Tensor) -> Callable[[], object]:
        binding = session.io_binding()
        array = np.ascontiguousarray(x.numpy())
        binding.bind_cpu_input("x", array)
        binding.bind_output("logits")  # allocated by the runtime, reused across calls

        def infer(array=array):  # holds the bound array: the binding points into its memory
            session.run_with_iobinding(binding)

        return infer

    return Runner(run, bind)


def import_openvino():
    """``openvino``, imported with its telemetry off, or None when it is not installed.

    Importing ``openvino`` initialises ``openvino_telemetry``, which writes a client id and
    usage counters under ``$HOME/intel`` and sends usage events, from every job that imports
    it. OpenVINO falls back to its own no-op stub when that optional package cannot be
    imported, so pqd makes it unimportable in its own processes before the first import."""
    import sys

    sys.modules.setdefault("openvino_telemetry", None)
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def _openvino_source(onnx_path: str | None) -> tuple:
    """``(openvino, Core, the ONNX model read)``, or the one-line error that says what is missing."""
    ov = import_openvino()
    if ov is None:
        raise PqdError("measure.runtime is 'openvino' but it is not installed; pip install openvino")
    if not onnx_path:
        raise PqdError("runtime 'openvino' needs the exported deployed.onnx")
    core = ov.Core()
    return ov, core, core.read_model(onnx_path)


def _openvino_precision(ov, precision: str) -> dict:
    """The compile option of ``precision``: ``f32`` forced, or nothing (the plugin's default)."""
    import openvino.properties.hint as hints

    if precision == "f32":
        return {hints.inference_precision: ov.Type.f32}
    if precision != "default":
        raise PqdError(f"OpenVINO precision {precision!r}: use f32 or default")
    return {}


def openvino_runner(deployed: str, onnx_path: str | None, threads: int, precision: str = "f32") -> Runner:
    """OpenVINO's CPU plugin on the exported QDQ graph: its low-precision transformations turn
    QuantizeLinear/DequantizeLinear pairs around convolutions into INT8 kernels. One model is
    compiled per input shape (static shapes let the plugin pick its fastest kernels), with the
    latency hint, one stream and ``threads`` inference threads. ``precision``: ``f32`` forces FP32
    arithmetic for floating-point layers (what pqd deploys and compares like with like);
    ``default`` leaves the plugin its default (bf16 on CPUs with AVX-512 BF16 or AMX: what
    ``compile_model(model, "CPU")`` gives a user)."""
    ov, core, source = _openvino_source(onnx_path)
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {
        props.inference_num_threads: threads,
        props.num_streams: 1,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        **_openvino_precision(ov, precision),
    }
    compiled: dict[tuple, object] = {}

    def request_for(shape: tuple):
        if shape not in compiled:
            model = source.clone()
            model.reshape({model.input(0).get_any_name(): ov.PartialShape(list(shape))})
            compiled[shape] = core.compile_model(model, "CPU", config).create_infer_request()
        return compiled[shape]

    def run(x: torch.Tensor) -> torch.Tensor:
        request = request_for(tuple(x.shape))
        request.infer({0: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    def bind(x: torch.Tensor) -> Callable[[], object]:
        # a request of its own: evaluation calls on the shared one must not replace this input
        request = request_for(tuple(x.shape)).get_compiled_model().create_infer_request()
        array = np.ascontiguousarray(x.numpy())
        request.set_input_tensor(ov.Tensor(array))

        def infer(array=array):  # holds the array: the input tensor may share its memory
            # the synchronous call (benchmark_app -api sync); start_async + wait from Python added
            # 0.1 ms per call on a 0.25 ms ResNet-20 here
            request.infer()

        return infer

    def chosen(shape: tuple) -> str:
        return request_for(shape).get_compiled_model().get_property(hints.inference_precision).get_type_name()

    return Runner(run, bind, chosen)


def make_runner(
    name: str, deployed: str, onnx_path: str | None, threads: int, precision: str = "f32"
) -> Runner | torch.nn.Module:
    """The ``Tensor -> Tensor`` callable of runtime ``name`` (see :data:`pqd.catalog.RUNTIMES`);
    ``precision="default"`` (runtimes with ``default_precision`` only): the runtime's own choice for
    floating-point layers instead of forced f32."""
    spec = RUNTIMES.get(name)
    if precision == "f32":
        return resolve(spec.runner)(deployed, onnx_path, threads)
    if not spec.default_precision:
        raise PqdError(f"runtime {name!r} has no reduced default precision; time it at f32")
    return resolve(spec.runner)(deployed, onnx_path, threads, precision=precision)


# images per call where a runtime has no throughput mode of its own: a batch large enough to fill the
# cores' vector units on a small model, small enough for a 224 px FP32 model to take about a second
THROUGHPUT_BATCH = 16


@dataclass(frozen=True)
class Throughput:
    """A deployed model at its runtime's throughput setting: ``call()`` processes ``images`` images
    (a batch, or a burst of asynchronous requests) and returns when all are done; ``setting``
    records what the runtime chose. ``bind`` makes it timeable like a :class:`Runner`
    (:func:`pqd.measure.interleaved_latency`), the input being fixed already."""

    call: Callable[[], object]
    images: int
    setting: dict = field(default_factory=dict)

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        return self.call


def batched_throughput(
    runtime: str, deployed: str, onnx_path: str | None, threads: int, precision: str, image_size: int
) -> Throughput:
    """A batch of :data:`THROUGHPUT_BATCH` images through the runtime's latency runner."""
    runner = make_runner(runtime, deployed, onnx_path, threads, precision)  # a torch runner is in eval mode
    x = torch.randn(*input_shape(THROUGHPUT_BATCH, image_size))
    # timed under interleaved_latency's inference mode, like the latency runners
    call = runner.bind(x) if isinstance(runner, Runner) else functools.partial(runner, x)
    return Throughput(call, THROUGHPUT_BATCH, {"batch": THROUGHPUT_BATCH, "streams": 1, "requests": 1})


def openvino_throughput(
    runtime: str, deployed: str, onnx_path: str | None, threads: int, precision: str, image_size: int
) -> Throughput:
    """OpenVINO's own throughput setting, as ``benchmark_app -hint throughput`` runs it: the
    THROUGHPUT hint on ``threads`` threads (the plugin picks the streams), batch 1, as many
    asynchronous requests in flight as it calls optimal; one call is four rounds of them."""
    ov, core, model = _openvino_source(onnx_path)
    import openvino.properties as props
    import openvino.properties.hint as hints

    model.reshape({model.input(0).get_any_name(): ov.PartialShape(list(input_shape(1, image_size)))})
    config = {
        props.inference_num_threads: threads,
        hints.performance_mode: hints.PerformanceMode.THROUGHPUT,
        **_openvino_precision(ov, precision),
    }
    compiled = core.compile_model(model, "CPU", config)
    requests = int(compiled.get_property(props.optimal_number_of_infer_requests))
    queue = ov.AsyncInferQueue(compiled, requests)
    array = np.ascontiguousarray(torch.randn(*input_shape(1, image_size)).numpy())
    for request in queue:
        request.set_input_tensor(ov.Tensor(array))
    bursts = 4 * requests

    def call(array=array):  # holds the array: the input tensors may share its memory
        for _ in range(bursts):
            queue.start_async()
        queue.wait_all()

    setting = {"batch": 1, "streams": int(compiled.get_property(props.num_streams)), "requests": requests}
    return Throughput(call, bursts, setting)


def throughput_runner(
    name: str, deployed: str, onnx_path: str | None, threads: int, image_size: int, precision: str = "f32"
) -> Throughput:
    """Runtime ``name`` at its throughput setting (:attr:`pqd.catalog.RuntimeSpec.throughput`)."""
    return resolve(RUNTIMES.get(name).throughput)(name, deployed, onnx_path, threads, precision, image_size)


def runtime_versions(name: str) -> dict:
    """The runtime's name and the version of the package that provides it."""
    from importlib.metadata import version

    package = RUNTIMES.get(name).package
    return {"runtime": name, package: version(package)}
