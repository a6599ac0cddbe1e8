"""Benchmarks: suites (grids of task x method x seed), the resumable grid runner, overhead measurement."""
