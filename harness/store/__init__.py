"""What persists between runs: the baselines (``baselines``), the content-keyed artifact cache (``cache``) and
the machine and software fingerprints that key them (``environment``)."""
