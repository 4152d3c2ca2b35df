rule dense:
    """Train the dense FP32 model, or import dense.checkpoint (bring your own)."""
    input:
        data=data_file,
        checkpoint=lambda wc: byo_checkpoint(wc.exp),
    output:
        f"{RESULTS}/{{exp}}/dense/dense.pt",
    params:
        p=lambda wc: params_json(wc.exp, ""),
        ckpt=lambda wc, input: f"--checkpoint {shlex.quote(input.checkpoint)}" if input.checkpoint else "",
        code=code_hash(),
    log:
        "logs/{exp}/dense/dense.log",
    benchmark:
        "benchmarks/{exp}/dense/dense.tsv"
    threads: config["threads"]["train"]
    resources:
        cpus=lambda wc, threads: threads,
        mem_mb=8000,
        runtime=24 * 60,
    shell:
        "{PQD} dense --params {params.p:q} --data {input.data} {params.ckpt} "
        "--output {output} --threads {threads} > {log} 2>&1"


def stage_input(letter):
    """Input function of the rule of stage `letter`: the model after the chain's prefix."""

    def inputs(wc):
        chain = chain_of(wc.chain)
        expected = pqd_pipeline.artifact_name(chain) + ".pt"
        got = f"{pqd_pipeline.STAGES.get(letter).artifact}{wc.int8}.pt"
        if got != expected:
            fail(f"{RESULTS}/{wc.exp}/{wc.chain}/{got} is not a pqd target; that model is named {expected}")
        spec = pqd_pipeline.STAGES.get(letter)
        out = {"data": data_file(wc)}
        if not spec.starts:  # a starting stage builds its own model
            out["model"] = model_file(wc.exp, chain[:-1])
        if spec.needs_teacher:
            out["teacher"] = model_file(wc.exp, pqd_pipeline.teacher_chain(chain))
        return out

    return inputs


# One rule per registered stage letter: a new stage is a new pqd module + one registry entry.
for _letter in pqd_pipeline.STAGES:
    _spec = pqd_pipeline.STAGES.get(_letter)

    rule:
        name:
            f"stage_{_spec.name}"
        input:
            unpack(stage_input(_letter)),
        output:
            f"{RESULTS}/{{exp}}/{{chain}}/{_spec.artifact}{{int8}}.pt",
        wildcard_constraints:
            chain=f"[a-z]*{_letter}",
            int8="(_int8)?",
        params:
            p=lambda wc: params_json(wc.exp, wc.chain),
            model=lambda wc, input: f"--input {input.model}" if "model" in input.keys() else "",
            teacher=lambda wc, input: f"--teacher {input.teacher}" if "teacher" in input.keys() else "",
            letter=_letter,
            code=code_hash(f"{_spec.module.split('.')[-1]}.py"),
        log:
            "logs/{exp}/{chain}/" + _spec.name + "{int8}.log",
        benchmark:
            "benchmarks/{exp}/{chain}/" + _spec.name + "{int8}.tsv"
        threads: config["threads"]["train"]
        resources:
            cpus=lambda wc, threads: threads,
            mem_mb=8000,
            runtime=24 * 60,
        shell:
            "{PQD} stage --letter {params.letter} --params {params.p:q} {params.model} "
            "--data {input.data} {params.teacher} --output {output} --threads {threads} > {log} 2>&1"
