"""`make bench`: run every benchmarks/bench_*.py and write its JSON under benchmarks/results/.

Each bench module defines `run(quick: bool) -> list[dict]`; every dict is one figure:
    {"name": str, "value": float, "unit": str, "baseline": float | None, "ratio": float | None,
     "notes": str}
where `ratio` compares ours with a plain baseline measured side by side in the same run (higher is
better unless the notes say otherwise). Absolute times are only meaningful with the machine named,
which this script records next to the figures.

    python -m benchmarks.run_all [--only NAME] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> dict:
    info = {
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only benchmarks/bench_<ONLY>.py")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke check")
    args = parser.parse_args(argv)
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if args.only:
        names = [n for n in names if n == f"bench_{args.only}"]
        if not names:
            print(f"error: no benchmarks/bench_{args.only}.py", file=sys.stderr)
            return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        figures = module.run(quick=args.quick)
        record = {
            "benchmark": name.removeprefix("bench_"),
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "quick": args.quick,
            "figures": figures,
        }
        out = RESULTS / f"{record['benchmark']}.json"
        out.write_text(json.dumps(record, indent=2) + "\n")
        for fig in figures:
            ratio = "" if fig.get("ratio") is None else f"  ratio {fig['ratio']:.2f}x"
            print(f"  {fig['name']}: {fig['value']:.4g} {fig['unit']}{ratio}")
        print(f"  -> {out.relative_to(HERE.parent)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
