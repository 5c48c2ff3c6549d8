#!/usr/bin/env python3
"""stages.py: where a write's time goes, from two readings of each server's
/v1/agent/metrics (before and after a run).

Usage: stages.py WRITES ROLE=BEFORE.json,AFTER.json ...
Prints, per stage and server, the mean time of one measurement (ms) and
how many measurements the run made per acknowledged write (a batch of many
writes is one flush; a forward per batch).
"""
import json
import sys


def samples(path):
    with open(path) as f:
        return {s["Name"]: (s["Count"], s["Sum"]) for s in json.load(f).get("Samples", [])}


def main():
    writes = max(float(sys.argv[1]), 1.0)
    roles = []
    for arg in sys.argv[2:]:
        role, files = arg.split("=", 1)
        before, after = files.split(",")
        roles.append((role, samples(before), samples(after)))
    names = sorted({name for _, _, after in roles for name in after})
    width = max([len(n) for n in names] + [5])
    print(f"  {'stage':<{width}}  " + "  ".join(f"{role:>22}" for role, _, _ in roles))
    for name in names:
        cells = []
        for _, before, after in roles:
            count = after.get(name, (0, 0.0))[0] - before.get(name, (0, 0.0))[0]
            total = after.get(name, (0, 0.0))[1] - before.get(name, (0, 0.0))[1]
            if count <= 0:
                cells.append(f"{'-':>22}")
            else:
                cells.append(f"{total / count:>9.3f} ms x{count / writes:>7.3f}/w")
        print(f"  {name:<{width}}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
