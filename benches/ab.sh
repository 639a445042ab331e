#!/usr/bin/env bash
# Compares two revisions on the backtest, in alternated runs: wall time, CPU
# and peak memory of each, and whether their alerts are the same, byte for
# byte. This machine's timings swing by 10–20% from run to run; runs taken
# back to back, one of each, see the same swings, where two separate
# benchmark runs do not.
#
#   benches/ab.sh BEFORE [AFTER] [PAIRS]
#
# BEFORE and AFTER are git revisions (AFTER: the working tree when left out),
# PAIRS the number of alternated pairs (default 3). The input is a simulated
# world of MANAGERS managers (default 4000, about 5 M events) over 540 days,
# made once into WORK (default /var/tmp/feidan-ab).
set -euo pipefail
cd "$(dirname "$0")/.."
before="${1:?usage: benches/ab.sh BEFORE [AFTER] [PAIRS]}"
after="${2:-}"
pairs="${3:-3}"
work="${WORK:-/var/tmp/feidan-ab}"
managers="${MANAGERS:-4000}"
mkdir -p "$work"
command -v /usr/bin/time >/dev/null || { echo "ab.sh needs GNU time (/usr/bin/time)" >&2; exit 2; }

# Builds revision $1 (empty: the working tree) into $work/$2, in a target
# directory of its own ($work/target-$2; the first run builds everything
# twice). Cargo judges a crate up to date by its files' times: a tree built
# into a shared directory after another, older-looking tree (a worktree
# checked out now, a fresh clone built by CI) kept the other's library.
# Before 2026-11-30 ab.sh shared one, and its "after" binary was the
# working tree's main.rs linked with the revision's library.
build() {
  local revision="$1" name="$2" tree=. target="$work/target-$2"
  if [[ -n "$revision" ]]; then
    tree="$work/tree"
    # A run stopped halfway leaves its worktree behind, or its record.
    git worktree remove --force "$tree" 2>/dev/null || true
    git worktree prune
    git worktree add --quiet --detach "$tree" "$revision"
  fi
  (cd "$tree" && CARGO_TARGET_DIR="$target" cargo build --release --locked --quiet --bin feidan)
  cp "$target/release/feidan" "$work/$name"
  if [[ -n "$revision" ]]; then
    git worktree remove --force "$tree"
  fi
}

echo "== building $before and ${after:-the working tree}" >&2
build "$before" before
build "$after" after

world="$work/world-$managers.jsonl"
if [[ ! -s "$world" ]]; then
  echo "== simulating $managers managers" >&2
  "$work/after" simulate --out "$world" --seed 1 --managers "$managers" --days 540 2>/dev/null
fi

echo "run     wall s   CPU s   peak MiB   alerts"
for pair in $(seq "$pairs"); do
  for name in before after; do
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
      "$work/$name" backtest --input "$world" --output "$work/$name.alerts.jsonl" >/dev/null
    read -r wall user system peak <"$work/time"
    if [[ "$name" == after ]]; then
      same="$(cmp -s "$work/before.alerts.jsonl" "$work/after.alerts.jsonl" && echo same || echo DIFFERENT)"
    else
      same=""
    fi
    printf '%-6s %7.2f %7.2f %10d   %s\n' "$name" "$wall" \
      "$(awk "BEGIN { print $user + $system }")" "$((peak / 1024))" "$same"
  done
done
