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
        wildcard_constraints:
            chain=f"[a-z]*{_spec.letter}",
            int8="(_int8)?",
        params:
            p=stage_json(_spec),
            model=optional_arg("--input", "model"),
            teacher=optional_arg("--teacher", "teacher"),
            track=stage_track(_spec),
            code=stage_code(_spec),
        log:
            f"{LOGS}/{{exp}}/{_dir}/{_spec.name}{_suffix}.log",
        benchmark:
            f"{BENCHMARKS}/{{exp}}/{_dir}/{_spec.name}{_suffix}.tsv"
        conda:
            "../envs/pqd.yaml"
        threads: lambda wc: exp_cfg(wc.exp)["threads"]["train"]
        resources:
            cpus=lambda wc, threads: threads,
            **resources(pqd_pipeline.job_kind(_spec)),
        shell:
            "python3 -m pqd --track {params.track} stage --params {params.p:q} --data {input.data:q} {params.model} "
            "{params.teacher} --output {output:q} > {log:q} 2>&1"
