rule deploy:
    """The deployable model: converted to real INT8 kernels if it was trained fake-quantized."""
    input:
        model=lambda wc: model_file(wc.exp, chain_of(wc.pipeline)),
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/deployed.pt",
    params:
        code=code_hash("measure.py"),
    log:
        "logs/{exp}/{pipeline}/deploy.log",
    threads: 1
    resources:
        cpus=1,
        mem_mb=4000,
        runtime=30,
    shell:
        "{PQD} deploy --input {input.model} --output {output} > {log} 2>&1"


rule export_onnx:
    """The deployed model as ONNX (QDQ for INT8), for measure.runtime: onnxruntime or openvino."""
    input:
        model=rules.deploy.output[0],
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/deployed.onnx",
    params:
        code=code_hash("runtimes.py"),
    log:
        "logs/{exp}/{pipeline}/export_onnx.log",
    threads: 1
    resources:
        cpus=1,
        mem_mb=4000,
        runtime=30,
    shell:
        "{PQD} export --input {input.model} --output {output} > {log} 2>&1"


def onnx_file(exp, pipeline):
    """deployed.onnx of ``pipeline`` when the configured runtime executes ONNX, else nothing."""
    if exp_cfg(exp)["measure"]["runtime"] in ONNX_RUNTIMES:
        return rules.export_onnx.output[0].format(exp=exp, pipeline=pipeline)
    return []


def onnx_input(wc):
    return onnx_file(wc.exp, wc.pipeline)


def dense_onnx_input(wc):
    """The dense model's deployed.onnx, for timing dense FP32 in the same runtime."""
    return onnx_file(wc.exp, "dense")


rule evaluate:
    """Top-1 accuracy, size and measured sparsity of the deployed model."""
    input:
        model=rules.deploy.output[0],
        data=data_file,
        onnx=onnx_input,
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/eval.json",
    params:
        p=eval_json,
        onnx=lambda wc, input: f"--onnx {input.onnx}" if input.onnx else "",
        code=code_hash("measure.py", "runtimes.py"),
    log:
        "logs/{exp}/{pipeline}/evaluate.log",
    threads: config["threads"]["eval"]
    resources:
        cpus=lambda wc, threads: threads,
        mem_mb=4000,
        runtime=60,
    shell:
        "{PQD} evaluate --input {input.model} --data {input.data} --params {params.p:q} "
        "{params.onnx} --output {output} --threads {threads} > {log} 2>&1"


rule latency:
    """Batch-1 CPU latency of the deployed model and of dense FP32 (PyTorch eager, and the
    configured runtime when it is another one), interleaved in one job.
    It books every core of the machine (cpus) so that nothing else runs beside it."""
    input:
        model=rules.deploy.output[0],
        dense=f"{RESULTS}/{{exp}}/dense/deployed.pt",
        onnx=onnx_input,
        dense_onnx=dense_onnx_input,
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/latency.json",
    params:
        p=lambda wc: json.dumps(exp_cfg(wc.exp)["measure"], sort_keys=True),
        onnx=lambda wc, input: f"--onnx {input.onnx} --dense-onnx {input.dense_onnx}" if input.onnx else "",
        code=code_hash("measure.py", "runtimes.py"),
    log:
        "logs/{exp}/{pipeline}/latency.log",
    threads: config["measure"]["threads"]
    resources:
        cpus=MACHINE_CPUS,
        mem_mb=4000,
        runtime=30,
    shell:
        "{PQD} latency --input {input.model} --dense {input.dense} {params.onnx} --params {params.p:q} "
        "--output {output} --threads {threads} > {log} 2>&1"
