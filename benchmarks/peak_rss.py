"""PeakRSS: this process's resident memory sampled in a thread around a block of work (shared by the benchmarks).

    with PeakRSS() as mem:
        work()
    mem.added_mb          # peak during the block minus the RSS when it started
"""
from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    def __init__(self, interval: float = 0.005):
        self.proc, self.interval = psutil.Process(), interval

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def added_mb(self) -> float:
        return (self.peak - self.start) / 2**20
