# One rule per stage spec (dense training included): a new stage is a new pqd/stages module
# plus one StageSpec entry in pqd/pipeline.py, and its rule, params, resources come from here.


for _spec in pqd_pipeline.all_stage_specs():
    _dir = "dense" if not _spec.letter else "{chain}"
    _suffix = "" if not _spec.letter else "{int8}"

    rule:
        name:
            _spec.rule
        input:
            unpack(stage_input(_spec)),
        output:
            f"{RESULTS}/{{exp}}/{_dir}/{_spec.artifact}{_suffix}.pt",
        log:
            f"{LOGS}/{{exp}}/{_dir}/{_spec.name}{_suffix}.log",
        benchmark:
            f"{BENCHMARKS}/{{exp}}/{_dir}/{_spec.name}{_suffix}.tsv"
        wildcard_constraints:
            chain=f"[a-z]*{_spec.letter}",
            int8="(_int8)?",
        conda:
            "../envs/pqd.yaml"
        threads: lambda wc: exp_cfg(wc.exp)["threads"]["train"]
        resources:
            **resources("train"),
            cpus=lambda wc, threads: threads,
        params:
            p=stage_json(_spec),
            model=optional_arg("--input", "model"),
            teacher=optional_arg("--teacher", "teacher"),
            curve=optional_arg("--curve", "curve"),
            track=stage_track(_spec),
            code=stage_code(_spec),
        shell:
            "python3 -m pqd --track {params.track} stage --params {params.p:q} --data {input.data:q} {params.model} "
            "{params.teacher} {params.curve} --output {output:q} > {log:q} 2>&1"


rule equal_budget_control:
    """ctl-<pipeline>: the dense model fine-tuned with plain cross-entropy for that pipeline's
    epochs and learning rates, stage by stage (pqd/stages/finetune.py)."""
    input:
        data=data_file,
        model=lambda wc: model_file(wc.exp, ""),
    output:
        f"{RESULTS}/{{exp}}/ctl-{{of}}/finetuned.pt",
    log:
        f"{LOGS}/{{exp}}/ctl-{{of}}/finetune.log",
    benchmark:
        f"{BENCHMARKS}/{{exp}}/ctl-{{of}}/finetune.tsv"
    wildcard_constraints:
        of="[a-z]+",
    conda:
        "../envs/pqd.yaml"
    threads: lambda wc: exp_cfg(wc.exp)["threads"]["train"]
    resources:
        **resources("train"),
        cpus=lambda wc, threads: threads,
    params:
        p=lambda wc: control_json(wc.exp, wc.of),
        track=stage_track(pqd_pipeline.STAGES.get("f")),
        code=stage_code(pqd_pipeline.STAGES.get("f")),
    shell:
        "python3 -m pqd --track {params.track} stage --params {params.p:q} --data {input.data:q} "
        "--input {input.model:q} --output {output:q} > {log:q} 2>&1"
