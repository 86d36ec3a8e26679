#!/usr/bin/env bash
# Side-by-side figures: Switchyard, HAProxy, nginx (stream ssl_preread,
# stream TLS termination, http proxy) and sniproxy, with equivalent
# configurations, one worker thread each, all on loopback. TCP figures use
# the same load generator (benches/loadgen.rs, one thread); HTTP figures use
# wrk (HTTP/1.1) and h2load (h2), one thread each. Prints one table with the
# ratio to HAProxy and writes every figure to target/bench/compare.json.
#
#   bash benches/compare.sh --install   # apt-get install the peers first
#   DUR=6 HOLD=4000 bash benches/compare.sh
#   ONLY=http bash benches/compare.sh   # only the HTTP-mode figures
#   ONLY=tcp  bash benches/compare.sh   # only the passthrough figures
#   ONLY=idle bash benches/compare.sh   # only the idle-connection figure
#   ONLY=http-idle bash benches/compare.sh  # only the idle HTTP connection figures
#   HTTP_HOLD=2000 bash benches/compare.sh  # idle HTTP connections held per proxy
#   SY_BIN=/tmp/switchyard-before bash benches/compare.sh  # another build
#   SPLICE=false bash benches/compare.sh  # Switchyard copies bursts in user space
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DUR=${DUR:-6}
HOLD=${HOLD:-4000}
ROUTES=${ROUTES:-100000}
ONLY=${ONLY:-all}
HTTP_HOLD=${HTTP_HOLD:-2000}
OUT=$ROOT/target/bench
WORK=$OUT/work
mkdir -p "$WORK"

if [ "${1:-}" = "--install" ]; then
  apt-get update -qq && apt-get install -y -qq haproxy nginx-light libnginx-mod-stream sniproxy openssl wrk nghttp2-client >/dev/null
fi
for tool in haproxy nginx sniproxy openssl wrk h2load; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run with --install"; exit 1; }
done
ulimit -n 20000 2>/dev/null || true

echo "building switchyard and the load generator (release)…"
# SY_BIN: measure another build (an A/B against a saved binary).
[ -n "${SY_BIN:-}" ] || cargo build --release --quiet --bin switchyard || exit 1
LOADGEN=${LOADGEN_BIN:-$(cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | grep loadgen | head -1 | cut -d'"' -f4)}
[ -x "$LOADGEN" ] || { echo "cannot build benches/loadgen.rs"; exit 1; }
SY=${SY_BIN:-$ROOT/target/release/switchyard}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -f "$WORK/haproxy.pid" ] && kill $(cat "$WORK/haproxy.pid") 2>/dev/null
  for f in nginx-backend.pid nginx-proxy.pid nginx-fresh.pid sniproxy.pid; do
    [ -f "$WORK/$f" ] && kill "$(cat "$WORK/$f")" 2>/dev/null
  done
  wait 2>/dev/null
}
trap cleanup EXIT

cd "$WORK"
if [ ! -f srv.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.crt \
    -days 30 -subj "/CN=app.bench.test" -addext "subjectAltName=DNS:*.bench.test,DNS:app.bench.test" 2>/dev/null
  cat srv.crt srv.key > srv.pem
fi

# Backends: echo (9501), byte source (9502), nginx TLS web server (9443).
# Every nginx TLS server names its protocols: Debian's nginx 1.22 enables
# only TLS 1.2 unless told, where Switchyard and HAProxy speak TLS 1.3.
"$LOADGEN" serve --mode echo --listen 127.0.0.1:9501 & pids+=($!)
"$LOADGEN" serve --mode source --listen 127.0.0.1:9502 & pids+=($!)
cat > nginx-backend.conf <<NGX
worker_processes 1;
pid $WORK/nginx-backend.pid;
error_log $WORK/nginx-backend-error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:9443 ssl; ssl_certificate $WORK/srv.crt; ssl_certificate_key $WORK/srv.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
    location / { return 200 "hello-from-backend\n"; } }
  server { listen 127.0.0.1:9080; location / { return 200 "hello-from-backend\n"; }
    location = /16k.bin { root $WORK; } } }
NGX
# A 16 KiB response body, as a small page or script is.
head -c 16384 /dev/urandom > 16k.bin
nginx -c "$WORK/nginx-backend.conf"

# Route maps: the names every proxy serves, plus the scale maps.
q() { printf '%s' "$1" | sed 's/\./\\./g'; }
route() { printf '^%s\\.?(:[0-9]+)?(/.*)?$ %s\n' "$(q "$1")" "$2"; }
{ route echo.bench.test be_tcp:b:echo; route app.bench.test be_tcp:b:app; route bulk.bench.test be_tcp:b:bulk; route hold.bench.test be_tcp:b:echo; } > os_tcp_be.map
awk -v n="$ROUTES" 'BEGIN { for (i = 0; i < n; i++) printf "^r%d\\.bench\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:b:echo\n", i }' > scale.map
route web.bench.test be_edge_http:b:web > web.map
route plain.bench.test be_http:b:plain > plain.map
awk 'BEGIN { for (i = 0; i < 10; i++) printf "^r%d\\.bench\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:b:echo\n", i }' > small.map

# Switchyard: passthrough 13443, edge 13444, scale 13445, small 13446, HTTP
# mode on 13447 (TLS) and 13480 (plain). The maps apply to every listener:
# the edge figures use a name no map lists (edge.bench.test), which goes to
# the edge listener's default backend, a TCP-mode tunnel.
cat > switchyard.toml <<TOML
[[listener]]
name = "passthrough"
bind = "127.0.0.1:13443"
max_connections = 20000
[[listener]]
name = "edge"
bind = "127.0.0.1:13444"
default_backend = "be_edge:b:echo"
[[listener]]
name = "web"
bind = "127.0.0.1:13447"
[[listener]]
name = "plain"
bind = "127.0.0.1:13480"
protocol = "http"
[maps]
tcp_be = "os_tcp_be.map"
edge_reencrypt_be = "web.map"
http_be = "plain.map"
[tls]
default_certificate = "srv.pem"
[stats]
bind = "127.0.0.1:13936"
${SPLICE:+[relay]}
${SPLICE:+splice = $SPLICE}
[[backend]]
name = "be_tcp:b:echo"
servers = [{ name = "echo", address = "127.0.0.1:9501" }]
[[backend]]
name = "be_tcp:b:app"
servers = [{ name = "nginx", address = "127.0.0.1:9443" }]
[[backend]]
name = "be_tcp:b:bulk"
servers = [{ name = "source", address = "127.0.0.1:9502" }]
[[backend]]
name = "be_edge:b:echo"
termination = "edge"
mode = "tcp"
servers = [{ name = "echo", address = "127.0.0.1:9501" }]
[[backend]]
name = "be_edge_http:b:web"
termination = "edge"
servers = [{ name = "web", address = "127.0.0.1:9080" }]
[[backend]]
name = "be_http:b:plain"
termination = "none"
servers = [{ name = "web", address = "127.0.0.1:9080" }]
TOML
# The same web listener with the access log on, as deployed (JSON lines
# to a pipe, each drained by a reader), and a fresh one for the idle figures.
sy_web() { # port
  cat <<TOML
[[listener]]
name = "web"
bind = "127.0.0.1:$1"
max_connections = 20000
[maps]
edge_reencrypt_be = "web.map"
[tls]
default_certificate = "srv.pem"
[stats]
enabled = false
[[backend]]
name = "be_edge_http:b:web"
termination = "edge"
servers = [{ name = "web", address = "127.0.0.1:9080" }]
TOML
}
sy_web 13448 > switchyard-logged.toml
sy_web 13449 > switchyard-fresh.toml
for size in scale small; do
  port=$([ $size = scale ] && echo 13445 || echo 13446)
  cat > switchyard-$size.toml <<TOML
[[listener]]
name = "routes"
bind = "127.0.0.1:$port"
[maps]
tcp_be = "$size.map"
[stats]
enabled = false
[[backend]]
name = "be_tcp:b:echo"
servers = [{ name = "echo", address = "127.0.0.1:9501" }]
TOML
done

# HAProxy: the same on 1044x.
# HTTP mode as the reference writes it: route by base (Host + path), the
# forwarded headers, a sticky cookie inserted on every response.
hap_http() { # name bind map proto backend
  printf 'frontend %s\n  mode http\n  bind 127.0.0.1:%s\n  option http-keep-alive\n  option forwardfor\n' "$1" "$2"
  printf '  http-request set-header X-Forwarded-Host %%[req.hdr(host)]\n  http-request set-header X-Forwarded-Port %%[dst_port]\n'
  printf '  http-request set-header X-Forwarded-Proto %s\n  http-request set-header X-Forwarded-Proto-Version h2 if { ssl_fc_alpn -i h2 }\n' "$4"
  printf '  http-request add-header Forwarded for=%%[src];host=%%[req.hdr(host)];proto=%s\n' "$4"
  printf '  use_backend %%[base,lower,map_reg(%s)]\n' "$WORK/$3"
  printf 'backend %s\n  mode http\n  cookie c0ffee insert indirect nocache httponly secure attr SameSite=None\n  server web 127.0.0.1:9080 cookie 5e1ec7ed\n' "$5"
}
hap_frontend() { # name port map
  printf 'frontend %s\n  mode tcp\n  bind 127.0.0.1:%s\n  tcp-request inspect-delay 5s\n  tcp-request content accept if { req_ssl_hello_type 1 }\n  use_backend %%[req.ssl_sni,lower,map_reg(%s)]\n' "$1" "$2" "$WORK/$3"
}
{
  printf 'global\n  nbthread 1\n  maxconn 9000\n  pidfile %s/haproxy.pid\n  daemon\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  timeout tunnel 1h\n' "$WORK"
  hap_frontend passthrough 10443 os_tcp_be.map
  hap_frontend scale 10445 scale.map
  hap_frontend small 10446 small.map
  printf 'frontend edge\n  bind 127.0.0.1:10444 ssl crt %s/srv.pem\n  default_backend be_tcp:b:echo\n' "$WORK"
  printf 'backend be_tcp:b:echo\n  server s 127.0.0.1:9501\nbackend be_tcp:b:app\n  server s 127.0.0.1:9443\nbackend be_tcp:b:bulk\n  server s 127.0.0.1:9502\n'
  hap_http web "10447 ssl crt $WORK/srv.pem alpn h2,http/1.1" web.map https be_edge_http:b:web
  hap_http plain 10480 plain.map http be_http:b:plain
} > haproxy.cfg
# HAProxy's web frontend alone: logged as deployed (`option httplog`,
# `log stdout`, run in the foreground with its stdout drained by a reader),
# or fresh for the idle figures.
hap_web() { # port logged
  printf 'global\n  nbthread 1\n  maxconn 9000\n'
  [ "$2" = logged ] && printf '  log stdout format raw local0\n'
  printf 'defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 30s\n  timeout http-keep-alive 300s\n'
  [ "$2" = logged ] && printf '  log global\n  option httplog\n'
  hap_http web "$1 ssl crt $WORK/srv.pem alpn h2,http/1.1" web.map https be_edge_http:b:web
}
hap_web 10448 logged > haproxy-logged.cfg
hap_web 10449 fresh > haproxy-fresh.cfg

# nginx: stream ssl_preread on 11443, stream TLS termination on 11444.
ngx_location='location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header Forwarded "for=$remote_addr;host=$host;proto=$scheme"; }'
# nginx's web server alone, fresh for the idle figures.
cat > nginx-fresh.conf <<NGX
worker_processes 1;
pid $WORK/nginx-fresh.pid;
error_log $WORK/nginx-fresh-error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream web { server 127.0.0.1:9080; keepalive 64; }
  server { listen 127.0.0.1:11449 ssl http2; ssl_certificate $WORK/srv.crt; ssl_certificate_key $WORK/srv.key;
    ssl_protocols TLSv1.2 TLSv1.3; $ngx_location } }
NGX
cat > nginx-proxy.conf <<NGX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy-error.log warn;
events { worker_connections 40000; }
stream {
  map \$ssl_preread_server_name \$be { echo.bench.test 127.0.0.1:9501; hold.bench.test 127.0.0.1:9501;
    app.bench.test 127.0.0.1:9443; bulk.bench.test 127.0.0.1:9502; default 127.0.0.1:1; }
  server { listen 127.0.0.1:11443; ssl_preread on; proxy_pass \$be; }
  server { listen 127.0.0.1:11444 ssl; ssl_certificate $WORK/srv.crt; ssl_certificate_key $WORK/srv.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off; proxy_pass 127.0.0.1:9501; }
}
http {
  access_log off; keepalive_requests 1000000;
  upstream web { server 127.0.0.1:9080; keepalive 64; }
  server { listen 127.0.0.1:11447 ssl http2; listen 127.0.0.1:11480;
    ssl_certificate $WORK/srv.crt; ssl_certificate_key $WORK/srv.key; ssl_protocols TLSv1.2 TLSv1.3;
    $ngx_location }
  # Logged as deployed: the combined format, written 64 KiB at a time.
  server { listen 127.0.0.1:11448 ssl http2; ssl_certificate $WORK/srv.crt; ssl_certificate_key $WORK/srv.key;
    ssl_protocols TLSv1.2 TLSv1.3; access_log $WORK/nginx-access.log combined buffer=64k;
    $ngx_location }
}
NGX

cat > sniproxy.conf <<SNI
user root
pidfile $WORK/sniproxy.pid
error_log { filename $WORK/sniproxy-error.log
 priority notice }
listen 127.0.0.1:12443 { proto tls
 table bench }
table bench {
  ^echo\\.bench\\.test\$ 127.0.0.1:9501
  ^hold\\.bench\\.test\$ 127.0.0.1:9501
  ^app\\.bench\\.test\$ 127.0.0.1:9443
  ^bulk\\.bench\\.test\$ 127.0.0.1:9502
}
SNI

RUST_LOG=error "$SY" --threads 1 run --config "$WORK/switchyard.toml" & SYPID=$!; pids+=($SYPID)
RUST_LOG=error "$SY" --threads 1 run --config "$WORK/switchyard-scale.toml" & SYSCALE=$!; pids+=($SYSCALE)
RUST_LOG=error "$SY" --threads 1 run --config "$WORK/switchyard-small.toml" & pids+=($!)
"$SY" --threads 1 --log-format json run --config "$WORK/switchyard-logged.toml" 2> >(cat > "$WORK/switchyard-access.log") & SYLOG=$!; pids+=($SYLOG)
haproxy -f "$WORK/haproxy.cfg" || exit 1
haproxy -db -f "$WORK/haproxy-logged.cfg" > >(cat > "$WORK/haproxy-access.log") 2>&1 & HAPLOG=$!; pids+=($HAPLOG)
nginx -c "$WORK/nginx-proxy.conf"
sniproxy -c "$WORK/sniproxy.conf"
sleep 3
HAPID=$(cat "$WORK/haproxy.pid")
NGPID=$(pgrep -P "$(cat "$WORK/nginx-proxy.pid")" | head -1)
SNPID=$(cat "$WORK/sniproxy.pid" 2>/dev/null || pgrep -x sniproxy | head -1)

names=(switchyard haproxy nginx sniproxy)
ports=(13443 10443 11443 12443)
procs=("$SYPID" "$HAPID" "$NGPID" "$SNPID")
JSON=$OUT/compare.json.tmp
: > "$JSON"

run() { # label proxy-name pid loadgen-args… ; prints the JSON line and records it
  local label=$1 name=$2 pid=$3; shift 3
  local line
  line=$("$LOADGEN" "$@" --pid "$pid" 2>/dev/null | tail -1)
  [ -n "$line" ] || line='{"failed":true}'
  printf '{"figure":"%s","proxy":"%s",%s\n' "$label" "$name" "${line#\{}" >> "$JSON"
  printf '%s' "$line"
}
field() { printf '%s' "$1" | grep -o "\"$2\":[^,}]*" | head -1 | cut -d: -f2; }

declare -A T
# `direct`: the client to the backend with no proxy, the physical limit
# (its port is the one every proxy routes that SNI to).
direct_port() {
  case "$*" in
    *app.bench.test*) echo 9443 ;;
    *bulk.bench.test*) echo 9502 ;;
    *) echo 9501 ;;
  esac
}
figure() { # label field mode args… (over the passthrough proxies, then direct)
  local label=$1 f=$2; shift 2
  for i in "${!names[@]}"; do
    local line
    line=$(run "$label" "${names[$i]}" "${procs[$i]}" "$@" --target "127.0.0.1:${ports[$i]}")
    T["$label,${names[$i]}"]=$(field "$line" "$f")
    T["$label per proxy CPU-s,${names[$i]}"]=$(field "$line" ops_per_proxy_cpu_s)
    T["$label:mb-cpu,${names[$i]}"]=$(field "$line" mb_per_proxy_cpu_s)
  done
  line=$(run "$label" direct "" "$@" --target "127.0.0.1:$(direct_port "$@")")
  T["$label,direct"]=$(field "$line" "$f")
}

echo "measuring (${DUR}s per figure, one thread per proxy)…"
if [ "$ONLY" = all ] || [ "$ONLY" = tcp ] || [ "$ONLY" = idle ]; then
if [ "$ONLY" != idle ]; then
figure "passthrough keep-alive 64 B req/s" ops_per_s keepalive --sni echo.bench.test --conns 32 --secs "$DUR" --size 64
figure "passthrough keep-alive p99 us" p99_us keepalive --sni echo.bench.test --conns 32 --secs 2 --size 64
figure "passthrough new TLS connections/s" ops_per_s connect --sni app.bench.test --conns 32 --secs "$DUR" --tls
figure "passthrough new conn (hello+echo)/s" ops_per_s connect --sni echo.bench.test --conns 32 --secs "$DUR"
# Bulk: 8,000 MB per proxy, several seconds at loopback rates (a sample
# of one second says little); per proxy CPU-second too, and how much of
# Switchyard's went through a kernel pipe (splice).
spliced_before=$(curl -s 127.0.0.1:13936/metrics | awk '/^switchyard_relay_spliced_bytes_total/ { print $2 }')
figure "passthrough bulk MB/s" mb_per_s bulk --sni bulk.bench.test --size 8000
spliced_after=$(curl -s 127.0.0.1:13936/metrics | awk '/^switchyard_relay_spliced_bytes_total/ { print $2 }')
for n in "${names[@]}"; do T["passthrough bulk MB per proxy CPU-s,$n"]=${T["passthrough bulk MB/s:mb-cpu,$n"]:-}; done
SPLICED=$(awk -v a="${spliced_before:-0}" -v b="${spliced_after:-0}" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')
fi
figure "idle passthrough conn, bytes each" per_conn_bytes hold --sni hold.bench.test --conns "$HOLD"
T["idle passthrough conn, bytes each,direct"]=0
if [ "$ONLY" = all ]; then

enames=(switchyard haproxy nginx); eports=(13444 10444 11444); eprocs=("$SYPID" "$HAPID" "$NGPID")
efigure() {
  local label=$1 f=$2; shift 2
  for i in "${!enames[@]}"; do
    local line
    line=$(run "$label" "${enames[$i]}" "${eprocs[$i]}" "$@" --target "127.0.0.1:${eports[$i]}" --tls)
    T["$label,${enames[$i]}"]=$(field "$line" "$f")
  done
}
efigure "edge handshakes/s" ops_per_s connect --sni edge.bench.test --conns 32 --secs "$DUR"
efigure "edge keep-alive 64 B req/s" ops_per_s keepalive --sni edge.bench.test --conns 32 --secs "$DUR" --size 64

for pair in "switchyard:13446:small" "switchyard:13445:scale" "haproxy:10446:small" "haproxy:10445:scale"; do
  IFS=: read -r name port size <<<"$pair"
  n=$([ "$size" = scale ] && echo "$ROUTES" || echo 10)
  line=$(run "new-conn latency p50 us, $n routes" "$name" "" routes --routes "$n" --secs 3 --target "127.0.0.1:$port")
  T["new-conn p50 us, $size routes,$name"]=$(field "$line" p50_us)
done

# Connection failures while the routes are rewritten 20 times.
reload_switchyard() {
  for i in $(seq 1 20); do
    cp os_tcp_be.map os_tcp_be.map.new && printf '# edit %s\n' "$i" >> os_tcp_be.map.new && mv os_tcp_be.map.new os_tcp_be.map
    sleep 0.25
  done
}
reload_haproxy() {
  for i in $(seq 1 20); do
    haproxy -f "$WORK/haproxy.cfg" -sf "$(cat "$WORK/haproxy.pid")"
    sleep 0.25
  done
}
for name in switchyard haproxy; do
  port=$([ $name = switchyard ] && echo 13443 || echo 10443)
  "reload_$name" & reloader=$!
  line=$(run "failed connections over 20 reloads" "$name" "" connect --sni echo.bench.test --conns 8 --secs 6 --target "127.0.0.1:$port")
  wait $reloader
  T["failed connections over 20 reloads,$name"]=$(field "$line" failures)
  T["connections during reloads,$name"]=$(field "$line" ops)
done
fi
fi
# HTTP mode: wrk (HTTP/1.1 keep-alive) and h2load (h2, 10 streams per
# connection), 32 connections, one thread; the proxy's CPU time (all its
# threads) is read from /proc before and after each run.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
per_cpu() { # requests ticks-used
  awk -v n="$1" -v t="$2" -v hz="$HZ" 'BEGIN { if (t <= 0) print "-"; else printf "%.0f", n / (t / hz) }'
}
to_us() { # wrk's "1.23ms" → 1230
  awk -v v="$1" 'BEGIN { u = v; sub(/[0-9.]+/, "", u); n = v + 0;
    if (u == "us") print int(n); else if (u == "ms") print int(n * 1000); else if (u == "s") print int(n * 1000000); else print "-" }'
}
# HPATH: the path asked for; HEADERS: more request headers (-H each);
# HPIDS: the processes measured (default: the main instances).
HPATH=/
HEADERS=()
HPIDS=()
hfigure() { # label tool url-scheme host sw-port hap-port ngx-port
  local label=$1 tool=$2 scheme=$3 host=$4; shift 4
  # HAProxy's pid is read again: the reload figures replace its process.
  local hports=("$@") hnames=(switchyard haproxy nginx) hprocs=("$SYPID" "$(cat "$WORK/haproxy.pid")" "$NGPID")
  [ ${#HPIDS[@]} -eq 3 ] && hprocs=("${HPIDS[@]}")
  local extra=() h
  for h in "${HEADERS[@]}"; do extra+=(-H "$h"); done
  for i in 0 1 2; do
    local port=${hports[$i]} pid=${hprocs[$i]} before after out reqs rps p99
    before=$(ticks "$pid")
    if [ "$tool" = wrk ]; then
      out=$(wrk -t1 -c32 -d"${DUR}s" --latency -H "Host: $host" "${extra[@]}" "$scheme://127.0.0.1:$port$HPATH" 2>&1)
      reqs=$(printf '%s\n' "$out" | awk '/requests in/ { print $1 }')
      rps=$(printf '%s\n' "$out" | awk '/^Requests\/sec/ { printf "%.0f", $2 }')
      p99=$(to_us "$(printf '%s\n' "$out" | awk '$1 == "99%" { print $2 }')")
      bad=$(printf '%s\n' "$out" | awk '/Non-2xx/ { print $NF }')
    else
      out=$(h2load -t1 -c32 -m10 -D "$DUR" --warm-up-time=1 --connect-to="127.0.0.1:$port" "${extra[@]}" \
        "$scheme://$host:$port$HPATH" 2>&1)
      reqs=$(printf '%s\n' "$out" | awk '/^requests:/ { print $8 }')
      rps=$(printf '%s\n' "$out" | awk '/^finished in/ { printf "%.0f", $4 }')
      bad=$(printf '%s\n' "$out" | awk '/^status codes:/ { print $5 + $7 + $9 }')
    fi
    after=$(ticks "$pid")
    if [ "$tool" = h2load ]; then
      # p99 from a shorter run that logs every request (logging costs
      # h2load CPU, so it is kept out of the throughput run).
      rm -f "$WORK/h2load.log"
      h2load -t1 -c32 -m10 -D 2 --connect-to="127.0.0.1:$port" --log-file="$WORK/h2load.log" \
        "$scheme://$host:$port/" >/dev/null 2>&1
      p99=$(awk '{ print $3 }' "$WORK/h2load.log" 2>/dev/null | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int(NR * 0.99)]; else print "-" }')
    fi
    local cpu=$((after - before)) per
    per=$(per_cpu "${reqs:-0}" "$cpu")
    T["$label req/s,${hnames[$i]}"]=${rps:--}
    T["$label requests,${hnames[$i]}"]=${reqs:-0}
    T["$label p99 us,${hnames[$i]}"]=${p99:--}
    T["$label req per proxy CPU-s,${hnames[$i]}"]=$per
    printf '{"figure":"%s","proxy":"%s","tool":"%s","requests":%s,"req_per_s":%s,"p99_us":%s,"proxy_cpu_s":%s,"req_per_cpu_s":%s,"non_2xx":%s}\n' \
      "$label" "${hnames[$i]}" "$tool" "${reqs:-0}" "${rps:-0}" "${p99/-/0}" \
      "$(awk -v t="$cpu" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')" "${per/-/0}" "${bad:-0}" >> "$JSON"
  done
}
if [ "$ONLY" = all ] || [ "$ONLY" = http ]; then
hfigure "edge h1" wrk https web.bench.test 13447 10447 11447
hfigure "edge h2" h2load https web.bench.test 13447 10447 11447
hfigure "plain h1" wrk http plain.bench.test 13480 10480 11480
# What users send and get in practice: a 16 KiB body; 20 request headers
# (a browser's: user agent, accept-*, cookies, fetch metadata).
HPATH=/16k.bin hfigure "edge h1 16 KiB body" wrk https web.bench.test 13447 10447 11447
HEADERS=("User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
  "Accept-Language: en-US,en;q=0.9,de;q=0.8" "Accept-Encoding: gzip, deflate, br, zstd"
  "Cookie: _ga=GA1.2.1234567890.1700000000; session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark; c0ffee=5e1ec7ed"
  "Referer: https://web.bench.test/index.html" "Cache-Control: no-cache" "Pragma: no-cache"
  "Upgrade-Insecure-Requests: 1" "Sec-Fetch-Dest: document" "Sec-Fetch-Mode: navigate" "Sec-Fetch-Site: same-origin"
  "Sec-Fetch-User: ?1" "Sec-Ch-Ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"" "Sec-Ch-Ua-Mobile: ?0"
  "Sec-Ch-Ua-Platform: \"Linux\"" "Priority: u=0, i" "DNT: 1" "X-Requested-With: XMLHttpRequest")
hfigure "edge h1 20 headers" wrk https web.bench.test 13447 10447 11447
HEADERS=()
# Each proxy logging every request as deployed.
HPIDS=("$SYLOG" "$HAPLOG" "$NGPID")
lines_before=()
for f in switchyard haproxy nginx; do lines_before+=("$(wc -l < "$WORK/$f-access.log" 2>/dev/null || echo 0)"); done
hfigure "edge h1 logged" wrk https web.bench.test 13448 10448 11448
HPIDS=()
# Each proxy must have logged every request (a dropped line is cheaper).
sleep 1
i=0
for f in switchyard haproxy nginx; do
  [ $f = nginx ] && kill -USR1 "$(cat "$WORK/nginx-proxy.pid")" 2>/dev/null && sleep 0.5  # reopen: writes the buffer
  now=$(wc -l < "$WORK/$f-access.log" 2>/dev/null || echo 0)
  echo "edge h1 logged: $f wrote $((now - ${lines_before[$i]})) lines for ${T["edge h1 logged requests,$f"]:-?} requests"
  i=$((i + 1))
done
fi
# Idle HTTP connections: HTTP_HOLD TLS connections, one request each, then
# held; each proxy fresh (started for the figure, stopped after), its
# resident memory growth per connection.
if [ "$ONLY" = all ] || [ "$ONLY" = http ] || [ "$ONLY" = http-idle ]; then
for proto in h1 h2; do
  flag=$([ $proto = h2 ] && echo --h2)
  RUST_LOG=error "$SY" --threads 1 run --config "$WORK/switchyard-fresh.toml" & sy=$!; pids+=($sy)
  haproxy -db -f "$WORK/haproxy-fresh.cfg" >/dev/null 2>&1 & hap=$!; pids+=($hap)
  rm -f "$WORK/nginx-fresh.pid"
  nginx -c "$WORK/nginx-fresh.conf" || { echo "nginx (fresh) did not start"; break; }
  sleep 2
  ngx=$(pgrep -P "$(cat "$WORK/nginx-fresh.pid")" | head -1)
  for pair in "switchyard:$sy:13449" "haproxy:$hap:10449" "nginx:$ngx:11449"; do
    IFS=: read -r name pid port <<<"$pair"
    line=$(run "idle HTTP $proto TLS conn, bytes each" "$name" "$pid" http-hold --target "127.0.0.1:$port" \
      --sni web.bench.test --conns "$HTTP_HOLD" $flag)
    fails=$(field "$line" failures)
    if [ "${fails:-1}" = 0 ]; then
      T["idle HTTP $proto TLS conn, bytes each,$name"]=$(field "$line" per_conn_bytes)
    else
      echo "idle $proto on $name: ${fails:-all} connections failed"
    fi
  done
  ngxmaster=$(cat "$WORK/nginx-fresh.pid")
  kill "$sy" "$hap" "$ngxmaster" 2>/dev/null
  wait "$sy" "$hap" 2>/dev/null
  # Each proxy gone (its port free) before the next round starts fresh.
  for _ in $(seq 50); do kill -0 "$ngxmaster" 2>/dev/null || break; sleep 0.1; done
done
fi


row() { printf '%-40s' "$1"; shift; for v in "$@"; do printf '%13s' "$v"; done; echo; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }
echo
echo "$(nproc) cores, $(uname -r); one worker thread per proxy; load generator: 1 thread"
row "figure" switchyard haproxy nginx sniproxy "sy/haproxy" direct
for label in "passthrough keep-alive 64 B req/s" "passthrough keep-alive 64 B req/s per proxy CPU-s" \
  "passthrough keep-alive p99 us" "passthrough new TLS connections/s" \
  "passthrough new conn (hello+echo)/s" "passthrough new conn (hello+echo)/s per proxy CPU-s" "passthrough bulk MB/s" \
  "passthrough bulk MB per proxy CPU-s" "idle passthrough conn, bytes each" \
  "edge handshakes/s" "edge keep-alive 64 B req/s" "new-conn p50 us, small routes" "new-conn p50 us, scale routes" \
  "failed connections over 20 reloads" "connections during reloads" \
  "edge h1 req/s" "edge h1 p99 us" "edge h1 req per proxy CPU-s" "edge h2 req/s" "edge h2 p99 us" \
  "edge h2 req per proxy CPU-s" "plain h1 req/s" "plain h1 p99 us" "plain h1 req per proxy CPU-s" \
  "edge h1 16 KiB body req/s" "edge h1 16 KiB body p99 us" "edge h1 16 KiB body req per proxy CPU-s" \
  "edge h1 20 headers req/s" "edge h1 20 headers p99 us" "edge h1 20 headers req per proxy CPU-s" \
  "edge h1 logged req/s" "edge h1 logged p99 us" "edge h1 logged req per proxy CPU-s" \
  "idle HTTP h1 TLS conn, bytes each" "idle HTTP h2 TLS conn, bytes each"; do
  s=${T["$label,switchyard"]:-}; h=${T["$label,haproxy"]:-}
  row "$label" "${s:--}" "${h:--}" "${T["$label,nginx"]:--}" "${T["$label,sniproxy"]:--}" "$(ratio "$s" "$h")" "${T["$label,direct"]:--}"
done
echo "(small = 10 routes, scale = $ROUTES routes; latency and bytes: lower is better)"
if [ -n "${SPLICED:-}" ]; then echo "bulk row: ${SPLICED} MB of Switchyard's 8000 went through a kernel pipe (splice)"; fi
{ echo "["; sed '$!s/$/,/' "$JSON"; echo "]"; } > "$OUT/compare.json"
rm -f "$JSON"
echo "all figures: $OUT/compare.json"
