"""Peak resident memory (RSS) of a ``memgym train`` run, e.g. the quickstart.

Runs ``memgym train CONFIG --overwrite`` in a child process (``--set`` overrides pass through,
e.g. fewer episodes: the peak comes from the largest batch a stage holds, the SFT warm start's,
a GRPO micro-batch's or an evaluation's, not from how many there are) and reports the child's
peak RSS as the kernel counts it (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) against a limit.

    PYTHONPATH=. python experiments/bench/peak_rss.py experiments/quickstart.yaml --limit-gb 3
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    """Parse arguments, run the training child, print its peak RSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="KEY=VALUE, as memgym train --set; repeatable")
    parser.add_argument("--limit-gb", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, "-m", "memgym", "train", args.config, "--overwrite",
                   "--set", f"run_dir={run_dir}"]
        for override in args.overrides:
            command += ["--set", override]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    verdict = "within" if peak_gb <= args.limit_gb else "ABOVE"
    print(f"{args.config} {args.overrides}: peak RSS {peak_gb:.2f} GiB ({verdict} the "
          f"{args.limit_gb:g} GiB limit), {seconds:.0f} s")


if __name__ == "__main__":
    main()
