REPORT_TRACK = tracked("pqd.report")


rule report:
    """report.json of one pipeline: measurements plus the provenance of every stage."""
    input:
        model=lambda wc: pipeline_model(wc.exp, wc.pipeline),
        eval=f"{RESULTS}/{{exp}}/{{pipeline}}/eval.json",
        predictions=f"{RESULTS}/{{exp}}/{{pipeline}}/predictions.npz",
        latency=f"{RESULTS}/{{exp}}/{{pipeline}}/latency.json",
        dense_eval=f"{RESULTS}/{{exp}}/dense/eval.json",
    output:
        f"{RESULTS}/{{exp}}/{{pipeline}}/report.json",
    log:
        f"{LOGS}/{{exp}}/{{pipeline}}/report.log",
    conda:
        "../envs/pqd.yaml"
    threads: 1
    resources:
        **resources("light"),
        cpus=1,
    params:
        track=REPORT_TRACK,
        code=code_hash(REPORT_TRACK),
    shell:
        "python3 -m pqd --track {params.track} report --experiment {wildcards.exp:q} --pipeline {wildcards.pipeline:q} "
        "--input {input.model:q} --eval {input.eval:q} --latency {input.latency:q} "
        "--dense-eval {input.dense_eval:q} --output {output:q} > {log:q} 2>&1"


rule summary:
    """Every pipeline of an experiment over all its seeds: the verdict (which pipeline to ship within
    report.max_loss of dense) and a headline table, means with 95% CIs, letter groups, paired
    comparisons (pairwise.csv/.md), the minimum detectable effect, frontiers with error bars."""
    input:
        reports=lambda wc: [
            f"{RESULTS}/{r}/{p}/report.json" for r in replicates(wc.exp) for p in summary_pipelines(wc.exp)
        ],
        predictions=lambda wc: [
            f"{RESULTS}/{r}/{p}/predictions.npz" for r in replicates(wc.exp) for p in summary_pipelines(wc.exp)
        ],
    output:
        csv=report(f"{RESULTS}/{{exp}}/summary.csv", caption="../report/summary.rst", category="Summary"),
        md=f"{RESULTS}/{{exp}}/summary.md",
        plot=report(f"{RESULTS}/{{exp}}/frontier.png", caption="../report/frontier.rst", category="Summary"),
        pairwise=f"{RESULTS}/{{exp}}/pairwise.csv",
        pairwise_md=f"{RESULTS}/{{exp}}/pairwise.md",
        verdict=report(f"{RESULTS}/{{exp}}/verdict.html", caption="../report/verdict.rst", category="Summary"),
    log:
        f"{LOGS}/{{exp}}/summary.log",
    conda:
        "../envs/pqd.yaml"
    threads: 1
    resources:
        **resources("light"),
        cpus=1,
    params:
        track=REPORT_TRACK,
        code=code_hash(REPORT_TRACK),
        max_loss=lambda wc: summary_max_loss(wc.exp),
    shell:
        "python3 -m pqd --track {params.track} summary --reports {input.reports:q} --csv {output.csv:q} --md {output.md:q} "
        "--plot {output.plot:q} --pairwise {output.pairwise:q} --pairwise-md {output.pairwise_md:q} "
        "--html {output.verdict:q} --max-loss {params.max_loss} > {log:q} 2>&1"
