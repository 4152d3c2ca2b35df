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


rule evaluate:
    """Top-1 accuracy, size and measured sparsity of the deployed model."""
    input:
        model=rules.deploy.output[0],
        data=data_file,
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/eval.json",
    params:
        p=eval_json,
        code=code_hash("measure.py"),
    log:
        "logs/{exp}/{pipeline}/evaluate.log",
    threads: config["threads"]["eval"]
    resources:
        cpus=lambda wc, threads: threads,
        mem_mb=4000,
        runtime=60,
    shell:
        "{PQD} evaluate --input {input.model} --data {input.data} --params {params.p:q} "
        "--output {output} --threads {threads} > {log} 2>&1"


rule latency:
    """Batch-1 CPU latency of the deployed model and of dense FP32, interleaved in one job.
    It books every core of the machine (cpus) so that nothing else runs beside it."""
    input:
        model=rules.deploy.output[0],
        dense=f"{RESULTS}/{{exp}}/dense/deployed.pt",
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/latency.json",
    params:
        p=lambda wc: json.dumps(config["measure"], sort_keys=True),
        code=code_hash("measure.py"),
    log:
        "logs/{exp}/{pipeline}/latency.log",
    threads: config["measure"]["threads"]
    resources:
        cpus=MACHINE_CPUS,
        mem_mb=4000,
        runtime=30,
    shell:
        "{PQD} latency --input {input.model} --dense {input.dense} --params {params.p:q} "
        "--output {output} --threads {threads} > {log} 2>&1"
