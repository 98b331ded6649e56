"""The container image every TaigiMed component runs in (built from pipelines/Dockerfile)."""

TAIGIMED_IMAGE = "ghcr.io/taigimed/pipeline:0.1.0"
