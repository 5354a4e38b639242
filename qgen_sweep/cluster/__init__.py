"""Cluster batch jobs: SLURM script rendering and submission, Ray port blocks, storage checks.

Standard library only (architecture.md, Cluster layer): this package runs inside batch jobs before
Ray starts, and `qgen-sweep slurm` must start fast.
"""
