"""One-off probes behind the studies in ``docs/studies/``, each run as ``python -m benchmarks.probes.<name>``."""
