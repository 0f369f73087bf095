"""Medians per (workload, sync, system) from bench/run.sh's runs.tsv, with ratios to the floor F."""
import csv
import statistics
import sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = defaultdict(list)
for r in rows:
    by[(r["workload"], r["sync"], r["system"])].append(r)

def med(key, field):
    return statistics.median(float(r[field]) for r in by[key])

names = {"A": "A wallet.transfer", "K": "K wallet.transfer + key", "F": "F plain-SQL floor"}
print("| workload | synchronous_commit | system | runs | transfers/s | avg ms | p99 ms | server CPU µs/transfer | tps / F | CPU / F |")
print("|---|---|---|---|---|---|---|---|---|---|")
seen = []
for (w, s, _) in by:
    if (w, s) not in seen:
        seen.append((w, s))
for w, s in seen:
    f = (w, s, "F")
    for system in ("A", "K", "F"):
        key = (w, s, system)
        if key not in by:
            continue
        tps, cpu = med(key, "tps"), med(key, "cpu_us")
        ratio_tps = f"{tps / med(f, 'tps'):.2f}" if f in by else "-"
        ratio_cpu = f"{cpu / med(f, 'cpu_us'):.2f}" if f in by else "-"
        print(f"| {w} | {s} | {names[system]} | {len(by[key])} | {tps:,.0f} | {med(key, 'avg_ms'):.3f} "
              f"| {med(key, 'p99_ms'):.3f} | {cpu:.0f} | {ratio_tps} | {ratio_cpu} |")
