"""Peak memory of a whole process tree: run a command, sum the PSS of it and every descendant (the driver, the
Ray processes it starts, their workers) every 2 s, print the peak when it ends.

    python benchmarks/peak_memory.py make demo-redial

PSS (proportional set size) counts shared pages once across the tree, so the sum is what the tree costs the
machine. A process that lives less than the sampling interval can be missed.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

INTERVAL_S = 2.0


def tree_pss(root: psutil.Process) -> int:
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    started = time.perf_counter()
    command = subprocess.Popen(sys.argv[1:])
    root, peak = psutil.Process(command.pid), 0
    while command.poll() is None:
        try:
            peak = max(peak, tree_pss(root))
        except psutil.NoSuchProcess:
            break
        time.sleep(INTERVAL_S)
    print(f"peak PSS of the process tree: {peak / 2**30:.2f} GiB; wall {time.perf_counter() - started:.0f} s",
          flush=True)
    return command.returncode


if __name__ == "__main__":
    sys.exit(main())
