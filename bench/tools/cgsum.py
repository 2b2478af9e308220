#!/usr/bin/env python3
"""Self cost (Ir) per function from an uncompressed callgrind file, top N.
usage: cgsum.py FILE [N]"""
import sys, collections
f, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
cost = collections.Counter(); fn = None; in_call = False; total = 0
for line in open(f, errors="replace"):
    if line.startswith("fn="):
        fn = line[3:].strip(); continue
    if line.startswith("calls="):
        in_call = True; continue
    if line[:1].isdigit() or line[:1] in "+-*":
        parts = line.split()
        if len(parts) >= 2:
            if in_call:
                in_call = False; continue
            c = int(parts[1]); cost[fn] += c; total += c
        continue
    if line.startswith(("cfn=", "cfi=", "cob=", "cfl=")):
        continue
for name, c in cost.most_common(top):
    print(f"{c/total*100:6.2f}%  {c:>12,}  {name[:150]}")
print("total", total)
