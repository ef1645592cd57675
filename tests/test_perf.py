"""hrnet.runtime.perf.tune_cpu_allocator: freed large blocks are reused instead of re-faulted from the OS."""
import os
import subprocess
import sys

from conftest import ROOT

_PROBE = r"""
import resource, sys, torch
from hrnet.runtime.perf import tune_cpu_allocator

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.empty(40 << 20, dtype=torch.uint8).fill_(1)  # 40 MB: above glibc's 32 MB mmap cap
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
ok = tune_cpu_allocator()
faults()  # the first block after tuning comes from the OS once
print(default, ok, min(faults() for _ in range(3)))  # min: a neighbour's memory pressure can force a refault
"""


def test_tuned_allocator_stops_page_faults():
    # A subprocess: the setting is process-wide and must not leak into the test session.
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"), check=True).stdout.split()
    default, ok, tuned = int(out[0]), out[1] == "True", int(out[2])
    if sys.platform.startswith("linux"):
        assert ok
        # glibc's defaults re-fault ~10 x 10240 pages of 4 KiB (fewer with transparent huge pages always on)
        assert tuned < max(default // 10, 200), (default, tuned)
