"""The data half of the pipeline: demo data, ingest, audit, dedup, preprocess (paper §3–4)."""
