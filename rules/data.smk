rule prepare_data:
    """Decode a dataset once into a uint8 tensor cache (downloads c10/c100 on first use)."""
    output:
        f"{CACHE}/{{dataset}}.pt",
    params:
        spec=lambda wc: json.dumps(pqd_config.dataset_params(config, wc.dataset), sort_keys=True),
        code=code_hash(),
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "benchmarks/data/{dataset}.tsv"
    threads: 1
    resources:
        cpus=1,
        mem_mb=8000,
        runtime=60,
    shell:
        "{PQD} data --params {params.spec:q} --output {output} > {log} 2>&1"
