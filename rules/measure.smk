rule deploy:
    """The deployable model: converted to real INT8 kernels if it was trained fake-quantized."""
    input:
        model=lambda wc: pipeline_model(wc.exp, wc.pipeline),
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/deployed.pt",
    log:
        f"{LOGS}/{{exp}}/{{pipeline}}/deploy.log",
    conda:
        "../envs/pqd.yaml"
    threads: 1
    resources:
        **resources("light"),
        cpus=1,
    params:
        track=model_track,
        code=lambda wc: code_hash(model_track(wc)),
    shell:
        "python3 -m pqd --track {params.track} deploy --input {input.model:q} --output {output:q} > {log:q} 2>&1"


rule export_onnx:
    """The deployed model as ONNX (QDQ for INT8), for the runtimes that run ONNX, in the INT8 graph
    the runtime runs fastest; built from the pipeline's fake-quantized model where that graph is
    (pqd.catalog: int8_placement, onnx_int8), which it then also reads."""
    input:
        model=rules.deploy.output[0],
        source=export_source,
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/deployed.onnx",
    log:
        f"{LOGS}/{{exp}}/{{pipeline}}/export_onnx.log",
    conda:
        "../envs/pqd.yaml"
    threads: 1
    resources:
        **resources("light"),
        cpus=1,
    params:
        source=optional_arg("--source", "source"),
        runtime=export_runtime,
        track=export_track,
        code=lambda wc: code_hash(export_track(wc)),
    shell:
        "python3 -m pqd --track {params.track} export --input {input.model:q} {params.source} "
        "{params.runtime} --output {output:q} "
        "> {log:q} 2>&1"


rule evaluate:
    """Top-1 accuracy, size and measured sparsity of the deployed model, and its prediction for
    every test image (for paired comparisons in the summary)."""
    input:
        model=rules.deploy.output[0],
        data=data_file,
        onnx=onnx_input,
    output:
        json=f"{RESULTS}/{{exp}}/{{pipeline}}/eval.json",
        predictions=f"{RESULTS}/{{exp}}/{{pipeline}}/predictions.npz",
    log:
        f"{LOGS}/{{exp}}/{{pipeline}}/evaluate.log",
    conda:
        "../envs/pqd.yaml"
    threads: lambda wc: exp_cfg(wc.exp)["threads"]["eval"]
    resources:
        **resources("eval"),
        cpus=lambda wc, threads: threads,
    params:
        p=eval_json,
        onnx=optional_arg("--onnx", "onnx"),
        # dense is also scored in the runtime's default precision: the untrained baseline's accuracy
        baseline=lambda wc: "--default-precision" if wc.pipeline == "dense" else "",
        track=runtime_track,
        code=lambda wc: code_hash(runtime_track(wc)),
    shell:
        "python3 -m pqd --track {params.track} evaluate --input {input.model:q} --data {input.data:q} --params {params.p:q} "
        "{params.onnx} {params.baseline} --output {output.json:q} --predictions {output.predictions:q} "
        "--threads {threads} > {log:q} 2>&1"


rule latency:
    """Batch-1 CPU latency of the deployed model and of dense FP32 (PyTorch eager, and the
    configured runtime when it is another one), interleaved in one job.
    It books every core of the machine (cpus) so that nothing else runs beside it."""
    input:
        model=rules.deploy.output[0],
        dense=f"{RESULTS}/{{exp}}/dense/deployed.pt",
        onnx=onnx_input,
        dense_onnx=dense_onnx_input,
        reference=reference_input,
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/latency.json",
    log:
        f"{LOGS}/{{exp}}/{{pipeline}}/latency.log",
    conda:
        "../envs/pqd.yaml"
    threads: lambda wc: exp_cfg(wc.exp)["measure"]["threads"]
    resources:
        **resources("latency"),
        cpus=MACHINE_CPUS,
    params:
        p=measure_json,
        onnx=optional_arg("--onnx", "onnx"),
        dense_onnx=optional_arg("--dense-onnx", "dense_onnx"),
        reference=optional_arg("--reference", "reference"),
        track=runtime_track,
        code=lambda wc: code_hash(runtime_track(wc)),
    shell:
        "python3 -m pqd --track {params.track} latency --input {input.model:q} --dense {input.dense:q} {params.onnx} "
        "{params.dense_onnx} {params.reference} --params {params.p:q} --output {output:q} > {log:q} 2>&1"


rule latency_curve:
    """Batch-1 latency of the model entering a latency-targeted stage s, pruned at a grid of channel
    ratios as s prunes and deployed in the target's form, relative to the unpruned model timed in
    the same rounds (pqd/latency_curve.py). Measured where latency is measured: like the latency
    rule, it books the whole machine (and, on a cluster, the latency resources), not a training node."""
    input:
        model=lambda wc: model_file(wc.exp, chain_of(wc.chain)[:-1]),
    output:
        f"{RESULTS}/{{exp}}/{{chain}}/latency_curve.json",
    log:
        f"{LOGS}/{{exp}}/{{chain}}/latency_curve.log",
    wildcard_constraints:
        chain="[a-z]*[" + "".join(l for l in pqd_pipeline.STAGES if pqd_pipeline.STAGES.get(l).latency_curve) + "]",
    conda:
        "../envs/pqd.yaml"
    threads: lambda wc: exp_cfg(wc.exp)["measure"]["threads"]
    resources:
        **resources("latency"),
        cpus=MACHINE_CPUS,
    params:
        p=curve_json,
        track=lambda wc: tracked("pqd.latency_curve", exp=wc.exp, runtime=True),
        code=lambda wc: code_hash(tracked("pqd.latency_curve", exp=wc.exp, runtime=True)),
    shell:
        "python3 -m pqd --track {params.track} curve --input {input.model:q} --params {params.p:q} "
        "--output {output:q} > {log:q} 2>&1"
