rule prepare_data:
    """Decode a dataset once per input size into a uint8 tensor cache (downloads c10/c100 on first use)."""
    output:
        f"{CACHE}/{{dataset}}-{{size}}px.pt",
    log:
        f"{CACHE}/logs/{{dataset}}-{{size}}px.log",
    benchmark:
        f"{CACHE}/logs/{{dataset}}-{{size}}px.benchmark.tsv"
    wildcard_constraints:
        dataset="[A-Za-z0-9]+",
        size="[0-9]+",
    conda:
        "../envs/pqd.yaml"
    threads: 1
    resources:
        **resources("light"),
        cpus=1,
    params:
        spec=guarded(lambda wc: pqd_config.dataset_params(config, wc.dataset, int(wc.size)).to_json()),
        track=dataset_track,
        code=lambda wc: code_hash(dataset_track(wc)),
    shell:
        "python3 -m pqd --track {params.track} data --params {params.spec:q} --output {output:q} > {log:q} 2>&1"
