"""The tables of bench/protocols.sh: medians per system with ratios to a local transfer, then the
probe, crash and reader rows as measured. Usage: summarize_protocols.py RESULTS_DIR"""
import csv
import statistics
import sys
from collections import defaultdict

out = sys.argv[1]


def rows(name):
    return list(csv.DictReader(open(f"{out}/{name}"), delimiter="\t"))


by = defaultdict(list)
for r in rows("protocols.tsv"):
    by[r["system"]].append(r)


def med(system, field):
    return statistics.median(float(r[field]) for r in by[system])


names = {"A": "A local wallet.transfer", "T2": "TC/C, 2 legs, 2 nodes", "P2": "2PC, 2 legs, 2 nodes",
         "S2": "Saga, 2 legs, 2 nodes", "T3": "TC/C, 3 legs, 3 nodes", "P3": "2PC, 3 legs, 3 nodes",
         "S3": "Saga, 3 legs, 3 nodes"}
print("### Throughput (8 clients, synchronous_commit off, medians)\n")
print("| system | runs | transfers/s | / A | avg ms | p50 ms | p99 ms | CPU µs/transfer | commits/transfer | round trips to nodes/transfer |")
print("|---|---|---|---|---|---|---|---|---|---|")
for s in ("A", "T2", "P2", "S2", "T3", "P3", "S3"):
    if s not in by:
        continue
    print(f"| {names[s]} | {len(by[s])} | {med(s, 'tps'):,.0f} | {med(s, 'tps') / med('A', 'tps'):.2f} "
          f"| {med(s, 'avg_ms'):.2f} | {med(s, 'p50_ms'):.2f} | {med(s, 'p99_ms'):.2f} | {med(s, 'cpu_us'):.0f} "
          f"| {med(s, 'commits'):.2f} | {med(s, 'calls'):.2f} |")

print("\n### The payer's account while 4 clients pay out of it by each protocol (probe: 1 client, a local transfer out of the same account)\n")
print("| protocol | cross-node transfers/s out of the account | probe transfers/s | probe p50 ms | probe p99 ms | probe max ms |")
print("|---|---|---|---|---|---|")
for r in rows("protocols-probe.tsv"):
    print(f"| {r['protocol']} | {float(r['load_tps']):,.0f} | {float(r['probe_tps']):,.0f} | {r['probe_p50_ms']} "
          f"| {r['probe_p99_ms']} | {r['probe_max_ms']} |")

print("\n### A participant's crash (the paying node killed after it answered the try, restarted 2 s later)\n")
print("| protocol | outcome | prepared transactions on it after restart | pending holds on it | payer's account locked | restart to end, ms |")
print("|---|---|---|---|---|---|")
for r in rows("protocols-crash.tsv"):
    print(f"| {r['protocol']} | {r['outcome']} | {r['prepared_on_m2']} | {r['pending_holds_on_m2']} "
          f"| {r['payer_locked']} | {r['resolution_ms']} |")

print("\n### A reader summing the customers' money over two nodes (one query per node) during 4 clients' 2-leg transfers\n")
print("| protocol | samples | samples off | largest difference (minor units) |")
print("|---|---|---|---|")
for r in rows("protocols-reader.tsv"):
    print(f"| {r['protocol']} | {r['samples']} | {r['off']} ({100 * int(r['off']) / max(1, int(r['samples'])):.0f}%) | {r['max_off']} |")

print("\n### Batches of cross-node transfers (transfer_across_batch, here -> n2, 2 clients, synchronous_commit on, medians)\n")
print("| protocol | transfers per call | runs | transfers/s | avg ms per call | p99 ms per call | CPU µs/transfer |")
print("|---|---|---|---|---|---|---|")
batch = defaultdict(list)
for r in rows("protocols-batch.tsv"):
    batch[(r["protocol"], int(r["size"]))].append(r)
for (p, n) in sorted(batch):
    rs = batch[(p, n)]
    m = lambda f: statistics.median(float(r[f]) for r in rs)
    print(f"| {p} | {n:,} | {len(rs)} | {m('transfers_per_s'):,.0f} | {m('avg_ms'):.1f} | {m('p99_ms'):.1f} | {m('cpu_us'):.0f} |")
