#!/usr/bin/env python3
"""Helpers for bench/run.sh.

  report.py parse-oha FILE.json      -> "p50_ms p99_ms achieved_rps errors"
  report.py parse-wrk2 FILE.txt      -> same
  report.py report RESULTS.tsv META  -> the Markdown report on stdout

results.tsv columns: workers system scenario kind round v1 v2 v3 errors
(see bench/run.sh, record()).
"""

import json
import re
import statistics
import sys


def parse_oha(path):
    with open(path) as f:
        d = json.load(f)
    pct = d.get("latencyPercentiles") or {}
    summary = d.get("summary") or {}
    codes = d.get("statusCodeDistribution") or {}
    # With -w in-flight requests finish after the deadline; without it oha
    # cancels them, which is not an error of the server.
    errs = sum(
        int(v) for k, v in (d.get("errorDistribution") or {}).items() if "aborted due to deadline" not in k
    )
    errs += sum(int(v) for k, v in codes.items() if not str(k).startswith("2"))
    if pct.get("p50") is None or pct.get("p99") is None:
        raise SystemExit(f"{path}: no latency percentiles (no request succeeded?)")
    p50 = float(pct["p50"]) * 1000.0
    p99 = float(pct["p99"]) * 1000.0
    rps = float(summary.get("requestsPerSec") or 0.0)
    return p50, p99, rps, errs


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk2(path):
    text = open(path).read()
    pcts = {}
    for m in re.finditer(r"^\s*(\d+\.\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        pcts.setdefault(float(m.group(1)), float(m.group(2)) * _UNITS[m.group(3)])
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs += sum(int(x) for x in m.groups())
    if 50.0 not in pcts or 99.0 not in pcts:
        raise SystemExit(f"{path}: no latency distribution")
    return pcts[50.0], pcts[99.0], float(rps.group(1)) if rps else 0.0, errs


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line.split("\t")
            c += [""] * (9 - len(c))
            rows.append(
                {
                    "n": int(c[0]),
                    "sys": c[1],
                    "scen": c[2],
                    "kind": c[3],
                    "round": int(c[4] or 0),
                    "v1": float(c[5]) if c[5] else None,
                    "v2": float(c[6]) if c[6] else None,
                    "v3": float(c[7]) if c[7] else None,
                    "err": int(float(c[8] or 0)),
                }
            )
    return rows


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_rps(x):
    return "—" if x is None else f"{x:,.0f}"


def fmt_ms(x):
    return "—" if x is None else f"{x:.2f} ms"


def fmt_cpu(rows):
    m = med([r["v2"] for r in rows])
    return "—" if m is None else f"{m:.0f}%"


def rps_cell(xs):
    m = med(xs)
    if m is None:
        return "—"
    if len(xs) > 1:
        return f"{m:,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
    return fmt_rps(m)


def pick(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def paired(a, b, fn):
    """Median over rounds of fn(a_round, b_round) for rounds present in both."""
    by_round = {r["round"]: r for r in b}
    vals = [fn(r, by_round[r["round"]]) for r in a if r["round"] in by_round]
    return med(vals)


def report(results, meta_path):
    meta = {}
    with open(meta_path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    rows = load(results)
    ns = sorted({r["n"] for r in rows})
    scenarios = []
    for r in rows:
        if r["sys"] == "tollgate" and r["scen"] not in scenarios:
            scenarios.append(r["scen"])

    out = []
    w = out.append
    w(f"## Tollgate benchmark, {meta.get('date', '?')}")
    w("")
    w(
        f"Machine: {meta.get('nproc')} CPUs ({meta.get('cpu', '?')}), Linux {meta.get('kernel')}; "
        f"nginx {meta.get('nginx')}; Tollgate {meta.get('tollgate')} at commit {meta.get('commit')}."
    )
    lat = meta.get("lat_tool", "none")
    w(
        f"Throughput: wrk -t{meta.get('wrk_threads')} -c{meta.get('connections')}, "
        f"{meta.get('duration')} per measurement after a {meta.get('warmup')} warm-up. "
        + (
            f"Latency: {lat} at a fixed rate ({meta.get('rate_fraction', '0.5')} × nginx proxy_pass's max"
            + (", capped at the same fraction of oha's own max against the upstream" if lat == "oha" else "")
            + "), "
            f"-c{meta.get('connections')}, {meta.get('lat_duration')}"
            + (", corrected for coordinated omission." if lat == "oha" else ".")
            if lat != "none"
            else "Latency: skipped (no oha or wrk2)."
        )
    )
    w(
        f"Rounds: {meta.get('rounds')}, nginx and Tollgate alternated; medians shown "
        f"(range in brackets where a row has more than one run). Run took {meta.get('elapsed')}."
    )
    w("")
    w("| setup | workers | req/s | vs nginx proxy_pass | server CPU | p50 | p99 | p99 Δ vs nginx | errors |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    notes = []
    for n in ns:
        d = pick(rows, n=n, sys="direct", kind="thr")
        d_lat = pick(rows, n=n, sys="direct", kind="lat")
        w(
            f"| upstream direct | {n} | {rps_cell([r['v1'] for r in d])} | — | {fmt_cpu(d)} | "
            f"{fmt_ms(med([r['v1'] for r in d_lat]))} | {fmt_ms(med([r['v2'] for r in d_lat]))} | — | "
            f"{sum(r['err'] for r in d + d_lat)} |"
        )
        ng_thr = pick(rows, n=n, sys="nginx", kind="thr")
        ng_lat = pick(rows, n=n, sys="nginx", kind="lat")
        w(
            f"| nginx proxy_pass | {n} | {rps_cell([r['v1'] for r in ng_thr])} | 1.00 | {fmt_cpu(ng_thr)} | "
            f"{fmt_ms(med([r['v1'] for r in ng_lat]))} | {fmt_ms(med([r['v2'] for r in ng_lat]))} | — | "
            f"{sum(r['err'] for r in ng_thr + ng_lat)} |"
        )
        for s in scenarios:
            tg_thr = pick(rows, n=n, sys="tollgate", scen=s, kind="thr")
            tg_lat = pick(rows, n=n, sys="tollgate", scen=s, kind="lat")
            if not tg_thr and not tg_lat:
                continue
            pn_thr = pick(rows, n=n, sys="nginx", scen=s, kind="thr")
            pn_lat = pick(rows, n=n, sys="nginx", scen=s, kind="lat")
            ratio = paired(tg_thr, pn_thr, lambda a, b: a["v1"] / b["v1"] if b["v1"] else None)
            dp99 = paired(tg_lat, pn_lat, lambda a, b: a["v2"] - b["v2"])
            dp99_pct = paired(tg_lat, pn_lat, lambda a, b: (a["v2"] / b["v2"] - 1) * 100 if b["v2"] else None)
            dcell = "—" if dp99 is None else f"{dp99:+.2f} ms ({dp99_pct:+.0f}%)"
            w(
                f"| Tollgate {s} | {n} | {rps_cell([r['v1'] for r in tg_thr])} | "
                f"{'—' if ratio is None else f'{ratio:.2f}'} | {fmt_cpu(tg_thr)} | "
                f"{fmt_ms(med([r['v1'] for r in tg_lat]))} | {fmt_ms(med([r['v2'] for r in tg_lat]))} | "
                f"{dcell} | {sum(r['err'] for r in tg_thr + tg_lat)} |"
            )
            notes.append(
                f"N={n} {s}: paired nginx {fmt_rps(med([r['v1'] for r in pn_thr]))} req/s, "
                f"p50 {fmt_ms(med([r['v1'] for r in pn_lat]))}, p99 {fmt_ms(med([r['v2'] for r in pn_lat]))}"
            )
    w("")
    base = "pass-through"
    costs = []
    for n in ns:
        b = med([r["v1"] for r in pick(rows, n=n, sys="tollgate", scen=base, kind="thr")])
        for s in scenarios:
            if s == base or not b:
                continue
            v = med([r["v1"] for r in pick(rows, n=n, sys="tollgate", scen=s, kind="thr")])
            if v:
                costs.append(f"N={n} {s}: {v / b:.3f} × pass-through ({(1 - v / b) * 100:+.1f}% cost)")
    if costs:
        w("Policy cost, Tollgate scenario throughput over Tollgate pass-through in the same run: " + "; ".join(costs) + ".")
        w("")
    for n in ns:
        dm = med([r["v1"] for r in pick(rows, n=n, sys="direct", kind="thr")])
        nm = med([r["v1"] for r in pick(rows, n=n, sys="nginx", kind="thr")])
        if dm and nm and nm >= 0.85 * dm:
            w(
                f"Note: at N={n} nginx reaches {nm / dm:.0%} of the upstream-direct ceiling, so the "
                "harness (load generator and upstream) limits throughput as much as the proxy does; "
                "a proxy faster than nginx could not show it here."
            )
            w("")
    rates = {r["n"]: r for r in rows if r["kind"] == "rate"}
    if lat != "none" and rates:
        parts = []
        for n in sorted(rates):
            r = rates[n]
            txt = f"N={n}: {r['v1']:,.0f} req/s"
            if r["v2"] is not None and r["v3"] is not None and r["v1"] < r["v2"]:
                txt += (
                    f" (capped: {meta.get('rate_fraction', '0.5')} × nginx's max would be {r['v2']:,.0f}, "
                    f"more than the load generator sustains beside the upstream)"
                )
            parts.append(txt)
        w("Fixed rate for latency: " + "; ".join(parts) + ".")
        w("")
    if notes:
        w(
            "Tollgate's ratio and p99 Δ are medians of per-round pairs with the nginx runs "
            "alternated with it:"
        )
        for s in notes:
            w(f"- {s}")
        w("")
    rss = [r for r in rows if r["kind"] == "rss"]
    if rss:
        w("| Tollgate RSS | workers | idle (after start) | peak (VmHWM after run) |")
        w("| --- | ---: | ---: | ---: |")
        for r in rss:
            w(f"| {r['scen']} | {r['n']} | {r['v1'] / 1024:.1f} MiB | {r['v2'] / 1024:.1f} MiB |")
        w("")
    w(
        "Server CPU: CPU time used by the server under test (the upstream for \"direct\") "
        "during the throughput runs, in % of one core."
    )
    w("")
    total_err = sum(r["err"] for r in rows)
    w(
        "Errors (non-2xx responses plus socket errors): "
        + ("0 in every run." if total_err == 0 else f"**{total_err}: these figures are not valid.**")
    )
    print("\n".join(out))


def main(argv):
    if len(argv) == 3 and argv[1] == "parse-oha":
        p50, p99, rps, errs = parse_oha(argv[2])
    elif len(argv) == 3 and argv[1] == "parse-wrk2":
        p50, p99, rps, errs = parse_wrk2(argv[2])
    elif len(argv) == 4 and argv[1] == "report":
        report(argv[2], argv[3])
        return
    else:
        raise SystemExit(__doc__)
    print(f"{p50:.3f} {p99:.3f} {rps:.0f} {errs}")


if __name__ == "__main__":
    main(sys.argv)
