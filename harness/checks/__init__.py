"""The checks the gate runs: LFW ``accuracy``, embedding ``conformance`` with the reference, the perf
measurement (``throughput``) and its decision (``perfstats``), ``diagnose`` (where an engine starts to
differ) and ``soak`` (many instances, for a while)."""
