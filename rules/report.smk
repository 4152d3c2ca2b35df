REPORT_TRACK = tracked("pqd.report")


rule report:
    """report.json of one pipeline: measurements plus the provenance of every stage."""
    input:
        model=lambda wc: model_file(wc.exp, chain_of(wc.pipeline)),
        eval=f"{RESULTS}/{{exp}}/{{pipeline}}/eval.json",
        latency=f"{RESULTS}/{{exp}}/{{pipeline}}/latency.json",
        dense_eval=f"{RESULTS}/{{exp}}/dense/eval.json",
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/report.json",
    params:
        track=REPORT_TRACK,
        code=code_hash(REPORT_TRACK),
    log:
        f"{LOGS}/{{exp}}/{{pipeline}}/report.log",
    conda:
        "../envs/pqd.yaml"
    threads: 1
    resources:
        cpus=1,
        **resources("light"),
    shell:
        "python3 -m pqd --track {params.track} report --experiment {wildcards.exp:q} --pipeline {wildcards.pipeline:q} "
        "--input {input.model:q} --eval {input.eval:q} --latency {input.latency:q} "
        "--dense-eval {input.dense_eval:q} --output {output:q} > {log:q} 2>&1"


rule summary:
    """Every pipeline of an experiment: CSV + Markdown table and accuracy-vs-cost frontiers."""
    input:
        lambda wc: [f"{RESULTS}/{wc.exp}/{p}/report.json" for p in exp_cfg(wc.exp)["pipelines"]],
    output:
        csv=report(f"{RESULTS}/{{exp}}/summary.csv", caption="../report/summary.rst", category="Summary"),
        md=f"{RESULTS}/{{exp}}/summary.md",
        plot=report(f"{RESULTS}/{{exp}}/frontier.png", caption="../report/frontier.rst", category="Summary"),
    params:
        track=REPORT_TRACK,
        code=code_hash(REPORT_TRACK),
    log:
        f"{LOGS}/{{exp}}/summary.log",
    conda:
        "../envs/pqd.yaml"
    threads: 1
    resources:
        cpus=1,
        **resources("light"),
    shell:
        "python3 -m pqd --track {params.track} summary --reports {input:q} --csv {output.csv:q} --md {output.md:q} "
        "--plot {output.plot:q} > {log:q} 2>&1"
