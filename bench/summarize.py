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

names = {"A": "A wallet.transfer", "K": "K wallet.transfer + key", "F": "F plain-SQL floor",
         "H": "H try_hold + confirm_hold (local pair)",
         "L": "L transfer_across, both accounts local",
         "X": "X transfer_across to another database (dblink)"}
for size in (1, 10, 100, 1000, 8000):
    names[f"B{size}"] = f"B wallet.transfer_batch, {size:,} per call"
print("| workload | synchronous_commit | system | runs | transfers/s | avg ms (per call) | p99 ms (per call) | server CPU µs/transfer | transfers/s / ref | CPU / ref |")
print("|---|---|---|---|---|---|---|---|---|---|")
seen = []
for (w, s, _) in by:
    if (w, s) not in seen:
        seen.append((w, s))
for w, s in seen:
    # The reference: the floor F, except for TC/C, which is compared with a plain transfer A.
    f = (w, s, "A" if w.startswith("tcc") else "F")
    for system in ("A", "K", "F") + tuple(f"B{n}" for n in (1, 10, 100, 1000, 8000)) + ("H", "L", "X"):
        key = (w, s, system)
        if key not in by:
            continue
        tps, cpu = med(key, "tps"), med(key, "cpu_us")
        ratio_tps = f"{tps / med(f, 'tps'):.2f}" if f in by else "-"
        ratio_cpu = f"{cpu / med(f, 'cpu_us'):.2f}" if f in by else "-"
        print(f"| {w} | {s} | {names[system]} | {len(by[key])} | {tps:,.0f} | {med(key, 'avg_ms'):.3f} "
              f"| {med(key, 'p99_ms'):.3f} | {cpu:.1f} | {ratio_tps} | {ratio_cpu} |")
