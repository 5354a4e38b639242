"""Cluster batch jobs: SLURM script rendering and submission, Ray port blocks, storage checks.

Standard library at import time (architecture.md, Cluster layer): `qgen-sweep slurm` must start
fast. Only `wait` touches Ray, inside its function, and it runs inside batch jobs.
"""
