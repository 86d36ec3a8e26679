#!/usr/bin/env bash
# Interleaved A/B of two Switchyard builds in HTTP mode: both run side by
# side on the configuration compare.sh writes (B on ports +10000), and
# rounds of wrk / h2load alternate between them, so that a machine whose
# speed drifts moves both alike. Prints CPU µs per request (user + system,
# from /proc) for each round: edge h1, edge h2, plain h1, 20 headers.
#
#   bash benches/compare.sh            # once: writes the configurations
#   bash benches/ab.sh /tmp/switchyard-before target/release/switchyard
#   ROUNDS=7 SECS=3 bash benches/ab.sh A B
#
# All traffic is on loopback.
set -u
cd "$(dirname "$0")/.."
W=$(pwd)/target/bench/work
A=$(realpath "$1"); B=$(realpath "$2")
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-3}
[ -f "$W/switchyard.toml" ] || { echo "run benches/compare.sh once first: it writes $W"; exit 1; }
cd "$W"
sed -e 's/1344\([0-9]\)/2344\1/; s/13480/23480/; s/13936/23936/' switchyard.toml > switchyard-b.toml
nginx -c "$W/nginx-backend.conf" 2>/dev/null
RUST_LOG=error "$A" --threads 1 run --config "$W/switchyard.toml" 2>/dev/null & PA=$!
RUST_LOG=error "$B" --threads 1 run --config "$W/switchyard-b.toml" 2>/dev/null & PB=$!
trap 'kill $PA $PB 2>/dev/null; kill "$(cat "$W/nginx-backend.pid")" 2>/dev/null' EXIT
sleep 2
HZ=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HEADERS=(-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
  -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
  -H "Accept-Language: en-US,en;q=0.9,de;q=0.8" -H "Accept-Encoding: gzip, deflate, br, zstd"
  -H "Cookie: _ga=GA1.2.1234567890.1700000000; session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark; c0ffee=5e1ec7ed"
  -H "Referer: https://web.bench.test/index.html" -H "Cache-Control: no-cache" -H "Pragma: no-cache"
  -H "Upgrade-Insecure-Requests: 1" -H "Sec-Fetch-Dest: document" -H "Sec-Fetch-Mode: navigate"
  -H "Sec-Fetch-Site: same-origin" -H "Sec-Fetch-User: ?1" -H "Sec-Ch-Ua: \"Chromium\";v=\"131\""
  -H "Sec-Ch-Ua-Mobile: ?0" -H "Sec-Ch-Ua-Platform: \"Linux\"" -H "Priority: u=0, i" -H "DNT: 1"
  -H "X-Requested-With: XMLHttpRequest")
round() { # pid row port → CPU µs per request
  local pid=$1 row=$2 port=$3 before after reqs
  before=$(ticks "$pid")
  case $row in
    edge-h1) reqs=$(wrk -t1 -c32 -d"${SECS}s" -H "Host: web.bench.test" "https://127.0.0.1:$port/" | awk '/requests in/ { print $1 }') ;;
    headers) reqs=$(wrk -t1 -c32 -d"${SECS}s" -H "Host: web.bench.test" "${HEADERS[@]}" "https://127.0.0.1:$port/" | awk '/requests in/ { print $1 }') ;;
    plain-h1) reqs=$(wrk -t1 -c32 -d"${SECS}s" -H "Host: plain.bench.test" "http://127.0.0.1:$port/" | awk '/requests in/ { print $1 }') ;;
    edge-h2) reqs=$(h2load -t1 -c32 -m10 -D "$SECS" --connect-to="127.0.0.1:$port" "https://web.bench.test:$port/" | awk '/^requests:/ { print $8 }') ;;
  esac
  after=$(ticks "$pid")
  awk -v n="${reqs:-0}" -v t=$((after - before)) -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else printf "-" }'
}
median() { tr ' ' '\n' | grep -v '^-*$' | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }
echo "CPU µs per request, $ROUNDS rounds of ${SECS}s, A = $A, B = $B"
for row in edge-h1 edge-h2 plain-h1 headers; do
  pa=13447; pb=23447
  [ "$row" = plain-h1 ] && { pa=13480; pb=23480; }
  ra=(); rb=()
  for _ in $(seq "$ROUNDS"); do
    ra+=("$(round $PA $row $pa)"); rb+=("$(round $PB $row $pb)")
  done
  printf '%-9s A median %6s  (%s)\n' "$row" "$(echo "${ra[*]}" | median)" "${ra[*]}"
  printf '%-9s B median %6s  (%s)\n' "$row" "$(echo "${rb[*]}" | median)" "${rb[*]}"
done
