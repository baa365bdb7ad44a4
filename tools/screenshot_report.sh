#!/usr/bin/env bash
# Render results/<profile>/report.html in headless Chromium (Debian `chromium`) and save
# full-page screenshots of its top and of each section, so a person can check that the
# tables and figures show. Usage: tools/screenshot_report.sh [profile] [out_dir]
set -euo pipefail
profile=${1:-default}
root=$(cd "$(dirname "$0")/.." && pwd)
results=${RESRANK_RESULTS:-$root/results}
report="$results/$profile/report.html"
out=${2:-$results/$profile/screenshots}
[ -f "$report" ] || { echo "no report at $report: run 'snakemake --cores 8 all' first" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "chromium not found: install Debian's package (apt-get install chromium)" >&2
  exit 2
fi
mkdir -p "$out"
profile_dir=$(mktemp -d)
trap 'rm -rf "$profile_dir"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile_dir")
# The report is one long page: take it at several heights so every part is captured.
for height in 1600 4000 9000 16000; do
  "$browser" "${flags[@]}" --window-size=1400,$height --screenshot="$out/report-$height.png" \
    "file://$report" >/dev/null 2>&1
  echo "$out/report-$height.png"
done
