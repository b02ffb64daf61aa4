"""The benchmark suite of wa_session_store: ``python -m benchmarks`` (see README.md).

Every figure is a median over repeated runs, shown with its min and max, and
every comparison is a ratio measured in the same run (the machine is shared
and noisy, so no absolute time is ever asserted).
"""
