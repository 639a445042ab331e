#!/usr/bin/env python3
"""How soon could any detector have told, from silences alone, that a
diverter's customers stopped ordering? A bound to hold feidan's detection
delay against.

For each diverter of a `feidan simulate` world whose diverted accounts stop
ordering at the onset (styles `blatant`, `competitor`, `shrinking_quotes`;
`subtle` fades instead), an oracle is told which accounts were diverted and
when, and knows the simulator's rhythm family (gamma gaps of shape 4, in
business days) with each account's mean gap taken from its orders before the
onset. Each day after the onset it combines the diverted accounts'
survival probabilities, P[gap >= silence so far], into one p-value by
Fisher's method (what the product of k honest accounts' survivals is at
most; a silence's survival is at least uniform for regular gaps):

- `known`: the oracle also knows which accounts to look at (no multiplicity);
- `scan`: it knows only that some k of the book's n accounts stopped, and
  pays C(n, k) for choosing them (Bonferroni over the subsets of that size).

The day that p-value first falls below `--alpha` (book churn's default) is
the oracle's delay. Nothing here uses deals, visits or contracts: evidence
from them can only come on top. Calendar days stand for business days, which
makes the oracle faster than it could be through the holiday lull.

    benches/silence_bound.py WORLD.jsonl [WORLD.jsonl ...] [--alerts-suffix .out]

With `--alerts-suffix`, feidan's alerts for each world are read from the
world's name with that suffix (e.g. `s11.out` beside `s11.jsonl`, written by
`feidan backtest --output`), and its delay to the first manager-level alert
is printed beside the bound. Standard library only.
"""

import argparse
import datetime as dt
import json
import math
import statistics
import sys
from collections import defaultdict

STOPPING = ("blatant", "competitor", "shrinking_quotes")
MANAGER_KINDS = {"win_rate_drop", "pipeline_leakage", "book_churn",
                 "competitor_concentration", "diversion_risk"}
SHAPE = 4  # the simulator's gamma shape of gaps between orders


def day_of(timestamp, start):
    t = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (t - start).total_seconds() / 86400.0


def gamma4_survival(x, mean):
    """P[G >= x] for G ~ Gamma(4, mean / 4): e^-y (1 + y + y^2/2 + y^3/6)."""
    if x <= 0:
        return 1.0
    y = SHAPE * x / mean
    return math.exp(-y) * (1 + y + y * y / 2 + y ** 3 / 6)


def world_bounds(events_path, labels_path, alpha):
    labels = json.load(open(labels_path))
    start = dt.datetime.fromisoformat(labels["start"].replace("Z", "+00:00"))
    end_day = labels["days"]
    orders = defaultdict(list)
    owner = {}
    with open(events_path) as f:
        for line in f:
            e = json.loads(line)
            owner.setdefault(e["account_id"], e["manager_id"])
            if e["type"] == "order_placed":
                orders[e["account_id"]].append(day_of(e["occurred_at"], start))
    rows = []
    for d in labels["diverters"]:
        if d["style"] not in STOPPING:
            continue
        onset = day_of(d["onset"], start)
        book = [a for a, m in owner.items() if m == d["manager_id"]
                and sum(1 for t in orders[a] if t < onset) >= 3]
        diverted = [a for a in d["diverted_accounts"] if a in book]
        rhythms = []
        for a in diverted:
            before = sorted(t for t in orders[a] if t < onset)
            gaps = [later - earlier for earlier, later in zip(before, before[1:])]
            rhythms.append((before[-1], statistics.mean(gaps)))
        choose = math.comb(len(book), len(diverted))
        found = {"known": None, "scan": None}
        day = math.ceil(onset)
        while day <= end_day and found["scan"] is None:
            log_p = sum(math.log(max(gamma4_survival(day - last, mean), 1e-300))
                        for last, mean in rhythms)
            # Fisher's method: the product of k survivals of honest
            # accounts is at most this often so small.
            p = math.exp(log_p) * sum((-log_p) ** j / math.factorial(j)
                                      for j in range(len(rhythms)))
            for name, factor in (("known", 1), ("scan", choose)):
                if found[name] is None and p * factor < alpha:
                    found[name] = day - onset
            day += 1
        rows.append((d["manager_id"], d["style"], onset, len(diverted), len(book),
                     found["known"], found["scan"]))
    return start, rows


def feidan_delays(alerts_path, start, rows):
    first = {}
    with open(alerts_path) as f:
        for line in f:
            a = json.loads(line)
            if a["status"] != "firing" or a["kind"] not in MANAGER_KINDS:
                continue
            at = day_of(a["detected_at"], start)
            m = a["manager_id"]
            first[m] = min(first.get(m, at), at)
    out = {}
    for manager, _, onset, *_ in rows:
        at = first.get(manager)
        out[manager] = None if at is None or at < onset else round(at - onset)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("worlds", nargs="+", help="events JSONL, labels beside it")
    parser.add_argument("--alpha", type=float, default=2e-5)
    parser.add_argument("--alerts-suffix", help="feidan's alerts: WORLD<suffix>")
    args = parser.parse_args()
    known, scan, ours = [], [], []
    print(f"{'world':10} {'manager':10} {'style':17} k/n   known  scan  feidan")
    for path in args.worlds:
        stem = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
        start, rows = world_bounds(path, stem + ".labels.json", args.alpha)
        delays = feidan_delays(stem + args.alerts_suffix, start, rows) if args.alerts_suffix else {}
        name = stem.rsplit("/", 1)[-1]
        for manager, style, _, k, n, bound_known, bound_scan in rows:
            got = delays.get(manager)
            fmt = lambda v: "-" if v is None else str(v)
            print(f"{name:10} {manager:10} {style:17} {k}/{n:<3} {fmt(bound_known):>5} "
                  f"{fmt(bound_scan):>5} {fmt(got):>7}")
            if bound_known is not None:
                known.append(bound_known)
            if bound_scan is not None:
                scan.append(bound_scan)
            if got is not None:
                ours.append(got)
    print(f"\n{len(known)} diverters: oracle knowing the accounts, median {statistics.median(known)} "
          f"days; oracle scanning the book, median {statistics.median(scan)} days"
          + (f"; feidan (first manager-level alert), median {statistics.median(ours)} days "
             f"over the {len(ours)} it found" if ours else ""))


if __name__ == "__main__":
    sys.exit(main())
