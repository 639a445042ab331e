#!/usr/bin/env bash
# The detection-quality worlds of the README's "Measured quality": generates
# each simulated world once (into DIR, default target/worlds) and prints one
# backtest line per world: recall, precision, honest managers falsely accused
# per 100 manager-years, median delay, account churn recall and precision.
#
#   benches/worlds.sh [DIR] [-- backtest options, e.g. --sweep KEY=V1,V2]
#
# With --sweep, each world prints its sweep table instead. Uses the release
# binary (built if missing). FOREIGN=1 adds ten worlds drawn by
# benches/foreign_world.py (a generator written apart from feidan simulate;
# needs python3): f1-f7 of mixed order gaps, e11-e12 of exponential ones,
# r13 of near-regular ones. HELD_OUT=1 adds the eighteen held-out worlds of
# the README's "Measured quality" (h301-h310 and h401-h408: new hires,
# leave, churn, book and team sizes, short worlds), drawn after the
# detection was built and never used to tune it.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="target/worlds"
if (($#)) && [[ "$1" != "--" ]]; then
  dir="$1"
  shift
fi
[[ "${1:-}" == "--" ]] && shift
mkdir -p "$dir"

target="${CARGO_TARGET_DIR:-target}"
feidan="$target/release/feidan"
[[ -x "$feidan" ]] || cargo build --release --locked --quiet

# name  simulate options
worlds=(
  "s11 --seed 11" "s12 --seed 12" "s13 --seed 13" "s14 --seed 14" "s15 --seed 15"
  "s21 --seed 21" "s22 --seed 22" "s31 --seed 31 --managers 200"
  "s32 --seed 32 --managers 120 --accounts-per-manager 20"
  "s41 --seed 41" "s42 --seed 42" "s43 --seed 43 --managers 60 --accounts-per-manager 20"
  "s44 --seed 44 --managers 300"
  "s45 --seed 45 --managers 120 --accounts-per-manager 6 --days 720"
  # Other shapes, one world each.
  "o40 --seed 61 --accounts-per-manager 40" "o25 --seed 62 --accounts-per-manager 25"
  "o4 --seed 63 --accounts-per-manager 4"
  "m30 --seed 64 --managers 30" "m120 --seed 65 --managers 120" "m200 --seed 66 --managers 200"
  "d400 --seed 67 --days 400" "d720 --seed 68 --days 720" "d900 --seed 69 --days 900"
  "t1 --seed 70 --managers-per-team 1" "t2 --seed 71 --managers-per-team 2"
  "t4 --seed 72 --managers-per-team 4" "t16 --seed 73 --managers-per-team 16"
  "c25 --seed 74 --churn-per-year 0.25" "c50 --seed 75 --churn-per-year 0.5"
  "v25 --seed 76 --diverter-share 0.25" "v40 --seed 77 --diverter-share 0.4"
  "l40 --seed 78 --leave-share 0.4"
)
if [[ "${FOREIGN:-}" == 1 ]]; then
  worlds+=(
    "f1 @foreign --seed 1" "f2 @foreign --seed 2" "f3 @foreign --seed 3"
    "f4 @foreign --seed 4" "f5 @foreign --seed 5"
    "f6 @foreign --seed 6 --managers 150 --team-size 12 --churn-per-year 0.25"
    "f7 @foreign --seed 7 --managers 120 --diverter-share 0.2 --churn-per-year 0.08"
    "e11 @foreign --seed 11 --gaps exponential"
    "e12 @foreign --seed 12 --gaps exponential --managers 150"
    "r13 @foreign --seed 13 --gaps regular"
  )
fi
if [[ "${HELD_OUT:-}" == 1 ]]; then
  worlds+=(
    "h301 --seed 301 --new-hire-share 0.5"
    "h302 --seed 302 --new-hire-share 0.4 --accounts-per-manager 20"
    "h303 --seed 303 --leave-share 0.6"
    "h304 --seed 304 --churn-per-year 0.25 --diverter-share 0.3"
    "h305 --seed 305 --accounts-per-manager 5 --managers 160"
    "h306 --seed 306 --accounts-per-manager 60 --managers 40"
    "h307 --seed 307 --days 300 --managers 120"
    "h308 --seed 308 --managers-per-team 3 --managers 90"
    "h309 --seed 309 --managers-per-team 30 --managers 120"
    "h310 --seed 310 --churn-per-year 0.4 --leave-share 0.3 --new-hire-share 0.2 --accounts-per-manager 15"
  )
  for seed in 401 402 403 404 405 406 407 408; do
    worlds+=("h$seed --seed $seed --churn-per-year 0.4 --accounts-per-manager 15 --managers 120")
  done
fi

printf 'world\trecall\tprecision\tfalse_per_100_manager_years\tmedian_delay_days\taccount_recall\taccount_precision\n'
for world in "${worlds[@]}"; do
  read -r name options <<<"$world"
  events="$dir/$name.jsonl"
  if [[ ! -s "$events" ]]; then
    # shellcheck disable=SC2086 # the options are words
    case "$options" in
      @foreign*) python3 benches/foreign_world.py ${options#@foreign} --out "$events" >/dev/null ;;
      *) "$feidan" simulate --out "$events" $options >/dev/null ;;
    esac
  fi
  if (($#)); then
    echo "== $name"
    "$feidan" backtest --input "$events" --labels "$dir/$name.labels.json" "$@" 2>/dev/null
    continue
  fi
  "$feidan" backtest --input "$events" --labels "$dir/$name.labels.json" 2>/dev/null |
    awk -v name="$name" '
      /^Managers:/ {
        match($0, /recall [0-9.]+/); recall = substr($0, RSTART + 7, RLENGTH - 7)
        match($0, /precision [0-9.]+/); precision = substr($0, RSTART + 10, RLENGTH - 10)
        match($0, /[0-9.]+ per 100/); falsely = substr($0, RSTART, RLENGTH - 8)
        match($0, /delay [0-9-]+/); delay = substr($0, RSTART + 6, RLENGTH - 6)
      }
      /^Accounts:/ {
        match($0, /recall [0-9.]+/); arecall = substr($0, RSTART + 7, RLENGTH - 7)
        match($0, /precision [0-9.]+/); aprecision = substr($0, RSTART + 10, RLENGTH - 10)
      }
      END { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, recall, precision, falsely, delay, arecall, aprecision }'
done
