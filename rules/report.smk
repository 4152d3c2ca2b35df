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
        code=code_hash("report.py"),
    log:
        "logs/{exp}/{pipeline}/report.log",
    threads: 1
    resources:
        cpus=1,
    shell:
        "{PQD} report --experiment {wildcards.exp} --pipeline {wildcards.pipeline} --input {input.model} "
        "--eval {input.eval} --latency {input.latency} --dense-eval {input.dense_eval} --output {output} > {log} 2>&1"


rule summary:
    """Every pipeline of an experiment: CSV + Markdown table and accuracy-vs-cost frontiers."""
    input:
        lambda wc: [f"{RESULTS}/{wc.exp}/{p}/report.json" for p in exp_cfg(wc.exp)["pipelines"]],
    output:
        csv=report(f"{RESULTS}/{{exp}}/summary.csv", caption="../report/summary.rst", category="Summary"),
        md=f"{RESULTS}/{{exp}}/summary.md",
        plot=report(f"{RESULTS}/{{exp}}/frontier.png", caption="../report/frontier.rst", category="Summary"),
    params:
        code=code_hash("report.py"),
    log:
        "logs/{exp}/summary.log",
    threads: 1
    resources:
        cpus=1,
    shell:
        "{PQD} summary --reports {input} --csv {output.csv} --md {output.md} --plot {output.plot} > {log} 2>&1"
