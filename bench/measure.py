#!/usr/bin/env python3
"""Run a command once and append its timing to a file, for bench/run.sh.

Usage: measure.py TIMINGS NAME STDERR_LOG COMMAND [ARG...]

Appends "NAME WALL_SECONDS CPU_SECONDS PEAK_RSS_KIB" to TIMINGS. Standard output is
discarded and standard error is appended to STDERR_LOG. wait4() gives the CPU time and the
peak resident set size of the command alone, with microsecond resolution.
"""
import os
import subprocess
import sys
import time


def main():
    timings, name, stderr_log, *command = sys.argv[1:]
    with open(stderr_log, "ab") as log:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"bench: {name} exited with {child.returncode}: {' '.join(command)}")
    with open(timings, "a") as out:
        out.write(f"{name} {wall:.6f} {usage.ru_utime + usage.ru_stime:.6f} "
                  f"{usage.ru_maxrss}\n")


if __name__ == "__main__":
    main()
