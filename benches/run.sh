#!/usr/bin/env bash
# Runs feidan's benchmarks and writes BENCHMARKS.md: the machine, the method,
# the figures. Sizes: MANAGERS (backtest world, default 4000 managers × 10
# accounts × 540 days ≈ 5 M events), FEIDAN_BENCH_MANAGERS (engine bench),
# FEIDAN_BENCH_SCALE (memory bench divisor).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/feidan-target}"
MANAGERS="${MANAGERS:-4000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release --locked --bin feidan
feidan="$CARGO_TARGET_DIR/release/feidan"

echo "== engine hot path (criterion)" >&2
# Criterion's comparison with an earlier run (lines with %) is left out.
# One thread: the engine figures are per core (an evaluation otherwise
# judges accounts and managers on every core).
export RAYON_NUM_THREADS=1
FEIDAN_BENCH_MANAGERS="${FEIDAN_BENCH_MANAGERS:-1000}" cargo bench --locked --bench engine -- --noplot 2>/dev/null >"$work/engine.txt" || true
# Criterion names a bench on a line of its own when the name is long.
engine="$(sed -n '/^checkpoint/q;p' "$work/engine.txt" | grep -E '^engine/|thrpt|time:' | grep -v '%' || true)"
checkpoint="$(sed -n '/^checkpoint/,$p' "$work/engine.txt" | grep -E '^checkpoint|time:' | grep -v '%' || true)"

echo "== engine hot path, the issue's world (criterion)" >&2
# 10,000 managers with 50 accounts each (500,000 accounts), as issue 6 asks,
# over WIDE_DAYS days (the stream is held in memory: 60 days ≈ 5 M events).
FEIDAN_BENCH_ONLY_ENGINE=1 FEIDAN_BENCH_MANAGERS=10000 FEIDAN_BENCH_ACCOUNTS=50 \
  FEIDAN_BENCH_DAYS="${WIDE_DAYS:-60}" \
  cargo bench --locked --bench engine -- --noplot 'engine/' 2>/dev/null >"$work/wide.txt" || true
wide="$(grep -E '^engine/|thrpt|time:' "$work/wide.txt" | grep -v '%' || true)"
wide_events="$(grep -o 'stream of [0-9]* events' "$work/wide.txt" | head -1 || true)"

unset RAYON_NUM_THREADS

echo "== memory per entity" >&2
memory="$(cargo bench --locked --bench memory 2>/dev/null | grep '^memory/' || true)"

echo "== through a real broker (tansu)" >&2
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
broker="skipped: tansu is not installed (cargo install tansu --locked --features dynostore,libsql)"
if command -v tansu >/dev/null; then
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  tansu broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" >"$work/tansu.log" 2>&1 &
  tansu_pid=$!
  sleep 2
  broker="$(FEIDAN_BENCH_BROKER="127.0.0.1:$port" FEIDAN_BENCH_EVENTS="${BROKER_EVENTS:-1000000}" \
    cargo bench --locked --bench broker 2>/dev/null | grep '^broker/' || true)"
  kill "$tansu_pid" 2>/dev/null || true
fi

echo "== backtest end to end ($MANAGERS managers)" >&2
"$feidan" simulate --out "$work/events.jsonl" --seed 1 --managers "$MANAGERS" --days 540 2>"$work/simulate.txt"
/usr/bin/time -v "$feidan" backtest --input "$work/events.jsonl" >"$work/backtest.txt" 2>"$work/time.txt"
replayed="$(head -1 "$work/backtest.txt")"
wall="$(grep 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')"
rss_kb="$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')"
size="$(du -h "$work/events.jsonl" | cut -f1)"

cat > BENCHMARKS.md <<MD
# feidan benchmarks

Written by \`benches/run.sh\` on $(date -u +%Y-%m-%d). Release build, one process.

## Machine

- $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
- $(free -g | awk '/Mem:/ {print $2}') GiB memory; $(rustc --version)

## Engine hot path (\`cargo bench --bench engine\`)

Simulated stream, FEIDAN_BENCH_MANAGERS=${FEIDAN_BENCH_MANAGERS:-1000} managers × 10 accounts × 180 days, single
thread (\`RAYON_NUM_THREADS=1\`), no Kafka. \`scan_bytes\` only reads the bytes, \`decode_only\` is serde
into the event type, \`decode_stages_lifecycle\` is the whole engine (decode,
account and manager stages, detectors, lifecycle). Throughput in events/s.

\`\`\`
$engine
\`\`\`

The world issue 6 names: FEIDAN_BENCH_MANAGERS=10000 managers × 50 accounts
(500,000 accounts) × ${WIDE_DAYS:-60} days (${wide_events:-its stream}), the same benches. Accounts' rhythms
are learnt after a month (\`churn.min_history\`), so the second month is
the one judged.

\`\`\`
$wide
\`\`\`

## Checkpoints (\`cargo bench --bench engine\`)

The engine of the bench above, fed its stream but for the last hour, is
restored into a fresh engine and changelog (untimed); then the last hour is
applied and one checkpoint taken: records encoded and the changelog's writes
planned. \`whole\` encodes the whole state (what \`run\` did before
2026-11-29); \`changes_of_the_last_hour\` encodes only the accounts, managers
and teams that changed, with every other record (engine, alerts, dedup
memory, event buffer), which is what \`run\` does every
\`engine.checkpoint_interval\` (10 s by default, so far fewer changes than an
hour's). Both include finding the unchanged and deleted entities.

\`\`\`
$checkpoint
\`\`\`

## Backtest end to end

\`feidan backtest\` on a simulated world of $MANAGERS managers over 540 days ($size of JSONL),
on all $(nproc) cores: one reads and decodes ahead, and each evaluation judges
accounts and managers on every core.

- $replayed
- wall time $wall, peak resident memory $((rss_kb / 1024)) MiB

## Memory per entity (\`cargo bench --bench memory\`)

Resident-set growth divided by the number of entities created.

\`\`\`
$memory
\`\`\`

## Through a real broker (\`cargo bench --bench broker\`)

tansu (DESIGN §10) in its own process, in-memory storage, a topic of
${BROKER_EVENTS:-1000000} simulated events in 4 partitions: a bare rdkafka consumer reads it all,
then feidan's service (the loop of \`feidan run\`: decode, engine, sinks,
checkpoints every 10 s, offsets) consumes it, in the same run. Then latency:
feidan runs on an empty topic while events are produced at a steady 10,000/s
for 20 s, and \`feidan_input_delay_seconds\` (a message's Kafka timestamp to
its being applied) gives p50 and p99, interpolated within histogram buckets.
\`scaled_*\`: the same topic through one instance scaled out
(\`kafka.scale_out\`: a stage per partition, their messages through the facts
and pace topics), to everything consumed and to every evaluation done up to
where the one-instance run got.

\`\`\`
$broker
\`\`\`

## Against the targets (issue 6)

| target | status |
|---|---|
| engine ≥ 1 M events/s, within 2× of decode-only | not met: see the engine figures above |
| backtest of 5 M events < 10 s, < 1 GiB | memory met; time not met (see above) |
| ≤ 256 B/account, ≤ 4 KiB/manager, ≤ 128 B/open opportunity | manager and open opportunity met; account not met (see above) |
| run ≥ 80% of a bare consumer through a broker | met: see the ratio above (0.85 to 0.87 in three runs on 2026-11-29; 0.77 to 0.86 before), with tansu and feidan sharing the two cores |
| p99 append-to-processed ≤ 50 ms at 10 k/s | met: see the latency above |

How the memory is measured: each kind in a fresh process (memory one
measurement frees would otherwise be reused by the next and hide its
growth), with the buffer of events awaiting the watermark kept small (its
peak would stay resident in the allocator and be counted as entities), and
with \`MIMALLOC_PURGE_DELAY=0\`: mimalloc hands freed memory back to the
system after a delay, so without it the resident set held the freed buffer
of the account index's last doubling or not, by timing (293 or 547 bytes
per account from run to run of one build).
The manager measured is a new one (one won deal). A manager with months of
history holds far more: up to 64 lost and 64 leaked deals kept as evidence
candidates, each a 168-byte reference plus its ids, about 36 KiB when full;
in a checkpoint a manager of the 4000-manager world averages 10.7 KB.

What changed on 2026-11-29 (alerts byte-identical before and after on the
bench world, simulator seed 11 and the 4000-manager world):
- An account's open deals are looked at only when one is due to stall or be
  forgotten (a timer per account), not every day: the daily account sweep
  fell from about a fifth of the engine's time to about a twentieth.
- Accounts live in one dense vector indexed by id (an IndexMap), not in the
  buckets of a hash map whose spare buckets were resident too; manager and
  team names are interned; kept evidence is an id, a time and an amount;
  open deals are a sorted vector, each holding its two ids in one
  allocation; optional times take 8 bytes and visits and deals thin
  vectors: 1575 → 339 bytes per account, 277 → 82 per open deal (same
  measurement before and after).
- \`backtest\` reads and decodes on a second thread, a few batches ahead of
  the engine.
- The competitor yardstick is worked out once per team and evaluation, not
  once per manager and competitor.

Later the same day (stop 12; alerts byte-identical on the same three worlds):
- A checkpoint encodes only the accounts, managers and teams that changed
  since the last one (see Checkpoints above), not the whole state.
- Managers sit in an insertion-ordered map, sampled for eviction by a
  seeded sequence: 1113 → 1064 bytes per manager.
- \`run\` now reads the state once the group has assigned it every input
  partition (one writer per group; README), and its partitions arrive
  paused. It wakes when they are assigned: noticing them only at the next
  one-second tick cost the broker ratio 0.1 (0.76–0.77), since startup is
  part of the measured time. Without that wait: 0.86–0.87 (stop 11:
  0.77–0.86).

- The engine figure fell from about 307k to 254k events/s, mostly not from
  the changes above: since account churn judges young accounts (issue 3:
  two gaps spanning a month, not five gaps), the bench world's accounts,
  all young in a 180-day world, are judged months earlier, and their
  managers' books are evaluated with them. Callgrind on the world's first
  155k events: 2.45 G instructions with the new defaults, 2.22 G with
  \`--set detect.churn.min_gaps=5 --set detect.churn.min_history=0s\`
  (account evaluation 194 M against 93 M, manager evaluation 232 M against
  129 M). Scanning and decoding ran at the same speed as in stop 11's run.

Stop 13 (2026-11-29, later; alerts byte-identical before and after each
engine change on the bench world, simulator seeds 11, 13 and 31 and the
first 1.2 M events of the 4000-manager world):
- mimalloc is the global allocator (the binary and the benches): the
  engine's many small short-lived values (ids, facts, evidence) cost
  malloc and free a fifth of the instructions.
- Event ids are \`compact_str\` strings, inline up to 24 bytes: decoding
  an event allocates nothing for them, and accounts, managers, teams and
  books are keyed by inline ids.
- Decoding fills its 19 field slots in place (returned by value, 608
  bytes were copied several times per event); field names are a \`match\`;
  timestamps in the usual \`YYYY-MM-DDTHH:MM:SSZ\` form are read without
  chrono's general parser (chrono decides every other form; property-tested
  against it). Decode-only: 1.94 M → about 2.9 M events/s.
- An evaluation finds a manager's book by the interned id's address, and
  counts an account's orders for the three book windows in one pass.
- An account holds its manager's and team's interned names behind thin
  pointers (8 bytes each, was 16).
- Memory per entity with all of the above: account 339 → 278 bytes (an
  inline key instead of a boxed one and its allocation, thin names),
  manager 1063 → about 1030, open opportunity 82 → 89 (mimalloc's size
  classes). Tried: the id of a kept event inline as well — no gain, as
  mimalloc serves a short id from an 8- or 16-byte class.
- Tried and backed out: computing a binomial or beta-binomial tail only
  when it can be the least of a detector's windows (skipped when a cheap
  bound proves it at least one half). Callgrind: it skipped about 3% of the
  tails (most managers sit within a standard deviation of what is
  expected, where no cheap bound settles the tail), and its bookkeeping
  cost as much. sonic-rs as the JSON parser behind the same visitor: 10%
  slower than serde_json. A galloping search from the newest day bucket:
  slower than bisection.
- Callgrind over the bench world: 7.90 G instructions after the allocator
  change, 7.20 G at the end. Wall-clock figures on this machine vary by
  ±10% between runs of the same binary (two runs of one build: 333k and
  335k events/s; an earlier one 394k).

Where the time goes now (callgrind, the bench world, 7.20 G instructions):
decoding 32% (on its own thread in \`backtest\`), the manager stage's daily
evaluation 43% — of which the binomial and beta-binomial tails 19%, every
manager's win-rate, leakage and book-churn tests run every day whether or
not anything about the manager changed — the account stage's daily
evaluation 12%, applying events 7%. Meeting 1 M events/s on this world
needs the manager stage evaluated only where its inputs changed, which
the leave-one-out team and company figures make rare: a team's counts move
every day. On the issue's world (50 accounts a manager) the manager stage
weighs less per event and the daily pass over 500,000 accounts more.
Meeting 256 bytes per account needs more than packing: an account keeps
its learnt rhythm (56 bytes), its last twelve order times (48) and the ids
of the events it may cite (its last order, recent visits); with the
account's own id and its slot in the index, about 250 bytes before
anything else it holds.
MD
echo "Wrote BENCHMARKS.md" >&2
