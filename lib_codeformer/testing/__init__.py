"""Harness for the tests and benchmarks: known inputs and the metrics measured on them; nothing at run time uses it.

- ``steadiness``: a clip with known face motion, and flicker and landmark-lag metrics;
- ``machine``: what the benchmarks say about the processor they ran on.
"""
