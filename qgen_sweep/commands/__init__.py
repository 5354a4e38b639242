"""CLI command modules. Each module defines `COMMANDS = (cmd, ...)`; qgen_sweep.cli discovers them.

Keep module-level imports light (click, stdlib, qgen_sweep.errors): heavy libraries are imported
inside the command functions.
"""
