rule prepare_data:
    """Decode a dataset once into a uint8 tensor cache (downloads c10/c100 on first use)."""
    output:
        f"{CACHE}/{{dataset}}.pt",
    params:
        spec=guarded(lambda wc: pqd_config.dataset_params(config, wc.dataset).to_json()),
        track=dataset_track,
        code=lambda wc: code_hash(dataset_track(wc)),
    log:
        f"{CACHE}/logs/{{dataset}}.log",
    benchmark:
        f"{CACHE}/logs/{{dataset}}.benchmark.tsv"
    conda:
        "../envs/pqd.yaml"
    threads: 1
    resources:
        cpus=1,
        **resources("light"),
    shell:
        "python3 -m pqd --track {params.track} data --params {params.spec:q} --output {output:q} > {log:q} 2>&1"
