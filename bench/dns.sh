#!/usr/bin/env bash
# dns.sh: DNS queries/s, Weft (ACLs off and on) vs dnsmasq vs unbound,
# measured with dnsperf.
#
# Why: every service lookup in a mesh goes through the local agent's DNS, so
# Weft's DNS should keep up with the small resolvers people would otherwise
# run next to it. The issue's goal: Weft >= dnsmasq and >= 0.5x unbound;
# issue 14's: Weft with ACLs on (default deny, DNS answering with a default
# token of 50 policies) within 10% of Weft with ACLs off.
# This script serves the same SERVICES names (`svc-NNNN.service.weft`, one A
# record each) from all three on the same machine and runs the same dnsperf
# command (same query file, duration and client settings) against each, one
# after the other. See bench/README.md for what the figures mean and their
# caveats.
#
# Steps: build weft (release); start Weft (by default 3 servers and one
# client agent, which answers DNS from its streamed copy of the catalog, as
# in production; WEFT_DNS=server: a single server answers) and register the
# names through /v1/catalog/register; the same again with ACLs on in every
# agent (weft-acl), 50 policies and a token holding them all made the
# answering agent's default token; start dnsmasq (the names in an
# addn-hosts file) and unbound (local-data); check that each answers; run
# dnsperf against each; print a table with the ratios. Everything started
# here is stopped (and the temp dir removed) on exit, on failure and on Ctrl-C.
#
# Environment (all optional):
#   SERVICES=1000            names served and queried (svc-0000 ... svc-0999), 1 to 10000
#   DURATION=10s             dnsperf run per target (N or Ns)
#   TARGETS="weft weft-acl dnsmasq unbound"  which servers to run (e.g. TARGETS="dnsmasq unbound");
#                            weft-acl: a second Weft cluster as weft, with ACLs on
#                            (default deny) and a default token of 50 policies
#   WEFT_DNS=client          client: 3 servers + a client agent answering DNS;
#                            server: one server (--bootstrap-expect 1) answering DNS
#   DNSPERF_CLIENTS=8        dnsperf -c: client sockets (spread over unbound's threads)
#   DNSPERF_THREADS=1        dnsperf -T: dnsperf's own threads
#   OUTSTANDING=100          dnsperf -q: queries in flight at most
#   UNBOUND_THREADS=$(nproc) unbound's num-threads
#   WAIT_SECS=60             how long Weft may take to elect a leader / sync the names
#   BUILD=1                  0: do not run cargo, use the existing weft binary
#   WEFT=path                weft binary (default target/release/weft)
#   DNSMASQ=path UNBOUND=path  (default: found on PATH or in /usr/sbin)
#   INSTALL=1                0: never try `apt-get install` for missing tools
#   KEEP_TMP=0               1: keep the temp dir (logs, configs, dnsperf output)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
SERVICES="${SERVICES:-1000}"
DURATION="${DURATION:-10s}"
TARGETS="${TARGETS:-weft weft-acl dnsmasq unbound}"
WEFT_DNS="${WEFT_DNS:-client}"
DNSPERF_CLIENTS="${DNSPERF_CLIENTS:-8}"
DNSPERF_THREADS="${DNSPERF_THREADS:-1}"
OUTSTANDING="${OUTSTANDING:-100}"
UNBOUND_THREADS="${UNBOUND_THREADS:-$(nproc 2>/dev/null || echo 1)}"
WAIT_SECS="${WAIT_SECS:-60}"
BUILD="${BUILD:-1}"
INSTALL="${INSTALL:-1}"
KEEP_TMP="${KEEP_TMP:-0}"
find_sbin() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }
DNSMASQ="${DNSMASQ:-$(find_sbin dnsmasq)}"
UNBOUND="${UNBOUND:-$(find_sbin unbound)}"

# Loopback ports. Weft (and weft-acl): RPC, HTTP and DNS per server, HTTP
# and DNS of the client agent. dnsmasq and unbound: DNS (UDP and TCP).
WEFT_RPC=(19301 19311 19321)
WEFT_HTTP=(19501 19511 19521)
WEFT_DNS_PORTS=(19601 19611 19621)
CLIENT_HTTP=19531
CLIENT_DNS=19631
WEFT_ACL_RPC=(19302 19312 19322)
WEFT_ACL_HTTP=(19502 19512 19522)
WEFT_ACL_DNS_PORTS=(19602 19612 19622)
ACL_CLIENT_HTTP=19532
ACL_CLIENT_DNS=19632
DNSMASQ_PORT=19653
UNBOUND_PORT=19654

LOG_TAG=dns TMP_CONTENTS="logs, configs and dnsperf output"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }
has_weft() { has_target weft || has_target weft-acl; }

name_of() { printf 'svc-%04d.service.weft' "$1"; }
ip_of() { printf '10.1.%d.%d' $(($1 / 200)) $(($1 % 200 + 1)); }

# Asks the server on `port` for the first and the last name; both must be
# answered with their A record.
check_answers() { # label port
	command -v dig >/dev/null || {
		log "dig not found (apt-get install -y bind9-dnsutils): not checking $1's answers"
		return 0
	}
	local i got
	for i in 0 $((SERVICES - 1)); do
		got=$(dig +short +time=2 +tries=2 @127.0.0.1 -p "$2" "$(name_of "$i")" A || true)
		[[ $got == "$(ip_of "$i")" ]] || die "$1 answered $(name_of "$i") with '${got}', expected $(ip_of "$i")"
	done
}

# A number from dnsperf's statistics: the n-th field of the line with the
# label, once brackets and commas are blanked out.
perf_field() { # file label field-number
	awk -v label="$2" -v n="$3" 'index($0, label) { gsub(/[(),]/, " "); print $n; exit }' "$1"
}

declare -A QPS LOST COMPLETED AVG_MS MAX_MS CPU PERF_CPU OTHER_CPU NOT_NOERROR
# Runs dnsperf against 127.0.0.1:<port> and records its figures under <target>.
# It runs in the background so that `wait` is interrupted by Ctrl-C or TERM.
run_dnsperf() { # target port pid
	local target=$1 port=$2 pid=$3 rc=0 out="$TMP/dnsperf-$1.out" cpu_before cpu_after
	local busy_before busy_after perf_before perf_after
	log "$target: dnsperf for ${SECS}s"
	cpu_before=$(cpu_secs "$pid")
	busy_before=$(machine_busy_secs)
	children_cpu
	perf_before=$CHILDREN_CPU
	timeout -k 5 $((SECS + 60)) dnsperf -s 127.0.0.1 -p "$port" -d "$TMP/queries.txt" -l "$SECS" \
		-c "$DNSPERF_CLIENTS" -T "$DNSPERF_THREADS" -q "$OUTSTANDING" -t 5 >"$out" 2>&1 &
	LOAD_PID=$!
	wait "$LOAD_PID" || rc=$?
	LOAD_PID=""
	cpu_after=$(cpu_secs "$pid")
	busy_after=$(machine_busy_secs)
	children_cpu
	perf_after=$CHILDREN_CPU
	if ((rc != 0)); then
		log "dnsperf against $target exited with $rc:"
		tail -n 20 "$out" | sed 's/^/    /' >&2
	fi
	kill -0 "$pid" 2>/dev/null || log "warning: $target (pid $pid) is no longer running"
	QPS[$target]=$(perf_field "$out" "Queries per second:" 4)
	COMPLETED[$target]=$(perf_field "$out" "Queries completed:" 3)
	LOST[$target]=$(perf_field "$out" "Queries lost:" 3)
	local avg max noerror
	avg=$(sed -nE 's/.*Average Latency \(s\): *([0-9.]+).*/\1/p' "$out")
	max=$(sed -nE 's/.*Average Latency \(s\):.*max ([0-9.]+).*/\1/p' "$out")
	[[ -n $avg ]] && AVG_MS[$target]=$(awk -v s="$avg" 'BEGIN { printf "%.3f", s * 1000 }')
	[[ -n $max ]] && MAX_MS[$target]=$(awk -v s="$max" 'BEGIN { printf "%.2f", s * 1000 }')
	noerror=$(sed -nE 's/.*Response codes:.*NOERROR ([0-9]+).*/\1/p' "$out")
	if [[ -n ${COMPLETED[$target]} ]]; then
		NOT_NOERROR[$target]=$((COMPLETED[$target] - ${noerror:-0}))
	fi
	CPU[$target]=$(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN { printf "%.1f", b - a }')
	PERF_CPU[$target]=$(awk -v a="$perf_before" -v b="$perf_after" 'BEGIN { printf "%.1f", b - a }')
	# Everything else the machine did meanwhile: neither the server under test nor dnsperf.
	OTHER_CPU[$target]=$(awk -v b0="$busy_before" -v b1="$busy_after" \
		-v s="${CPU[$target]}" -v p0="$perf_before" -v p1="$perf_after" \
		'BEGIN { o = (b1 - b0) - s - (p1 - p0); printf "%.1f", (o < 0 ? 0 : o) }')
}

# ---------------------------------------------------------------- checks ----

if ! [[ $SERVICES =~ ^[0-9]+$ ]] || ((SERVICES < 1 || SERVICES > 10000)); then
	die "SERVICES must be a number from 1 to 10000, not '$SERVICES'"
fi
if ! SECS=$(duration_secs "$DURATION") || ((SECS == 0)); then
	die "DURATION must look like 10 or 10s, not '$DURATION'"
fi
need_positive DNSPERF_CLIENTS DNSPERF_THREADS OUTSTANDING UNBOUND_THREADS WAIT_SECS
((DNSPERF_CLIENTS >= DNSPERF_THREADS)) || die "DNSPERF_CLIENTS must be at least DNSPERF_THREADS"
[[ $WEFT_DNS == client || $WEFT_DNS == server ]] || die "WEFT_DNS must be client or server, not '$WEFT_DNS'"
for t in $TARGETS; do
	[[ $t == weft || $t == weft-acl || $t == dnsmasq || $t == unbound ]] ||
		die "TARGETS may name only weft, weft-acl, dnsmasq and unbound, not '$t'"
done
need_tools curl awk sed timeout getconf

# ----------------------------------------------------------------- build ----

if has_weft; then
	if [[ $BUILD != 0 ]]; then
		log "building: cargo build --release -p weft-cli -p weft-bench"
		(cd "$ROOT" && cargo build --release -p weft-cli -p weft-bench) || die "cargo build failed"
	fi
	[[ -x $WEFT ]] || die "weft not found at $WEFT (build it: cargo build --release -p weft-cli)"
fi

make_tmp dns

# dnsperf, dnsmasq and unbound: Debian packages dnsperf, dnsmasq-base, unbound.
missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
has_target dnsmasq && [[ ! -x $DNSMASQ ]] && missing+=(dnsmasq-base)
has_target unbound && [[ ! -x $UNBOUND ]] && missing+=(unbound)
if ((${#missing[@]} > 0)) && [[ $INSTALL == 1 && $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
	log "installing ${missing[*]} (apt-get install -y ${missing[*]})"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y "${missing[@]}" >"$TMP/apt.log" 2>&1; then
		if apt-get update >>"$TMP/apt.log" 2>&1; then
			apt-get install -y "${missing[@]}" >>"$TMP/apt.log" 2>&1 || tail -n 5 "$TMP/apt.log" >&2
		fi
	fi
	DNSMASQ=$(find_sbin dnsmasq) UNBOUND=$(find_sbin unbound)
fi
command -v dnsperf >/dev/null || die "dnsperf is not installed; run as root: apt-get install -y dnsperf"
if has_target dnsmasq && [[ ! -x $DNSMASQ ]]; then
	log "dnsmasq is not installed; to compare with it, run as root: apt-get install -y dnsmasq-base"
	TARGETS=${TARGETS//dnsmasq/}
fi
if has_target unbound && [[ ! -x $UNBOUND ]]; then
	log "unbound is not installed; to compare with it, run as root: apt-get install -y unbound"
	TARGETS=${TARGETS//unbound/}
fi
has_weft || has_target dnsmasq || has_target unbound || die "nothing to run (TARGETS='$TARGETS')"

# The same names for everyone: dnsperf's query file, dnsmasq's hosts file,
# unbound's local-data, Weft's registrations.
for ((i = 0; i < SERVICES; i++)); do
	printf '%s A\n' "$(name_of "$i")"
done >"$TMP/queries.txt"

# ------------------------------------------------------------ weft start ----

# What the weft-acl agent's default token (the one its DNS answers with)
# gets from its one granting policy: reading every service and node. Its
# other 49 policies grant unrelated things (make_bench_token in lib.sh).
DNS_GRANT='service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }'

# By target (weft, weft-acl): the agent that answers DNS, its DNS port and
# its label in the table.
declare -A WEFT_PID_OF=() WEFT_PORT_OF=() WEFT_LABEL_OF=()

# Starts the Weft cluster of `target`, registers the names, and waits until
# the agent that answers DNS holds them all and answers. weft-acl: the same
# with ACLs on (default deny) in every agent, the servers making the
# management token at start, and the answering agent's default token
# holding ACL_POLICIES policies (set with PUT /v1/agent/token/default).
start_weft() { # target
	local target=$1 acl=0 prefix=s servers i j pid port http label name held deadline ok
	local -a rpc=("${WEFT_RPC[@]}") shttp=("${WEFT_HTTP[@]}") sdns=("${WEFT_DNS_PORTS[@]}")
	local -a joins config=() client_config=() auth=() server_pids=() server_names=()
	local chttp=$CLIENT_HTTP cdns=$CLIENT_DNS
	if [[ $target == weft-acl ]]; then
		acl=1 prefix=acl-s rpc=("${WEFT_ACL_RPC[@]}") shttp=("${WEFT_ACL_HTTP[@]}") sdns=("${WEFT_ACL_DNS_PORTS[@]}")
		chttp=$ACL_CLIENT_HTTP cdns=$ACL_CLIENT_DNS
		new_secret management
		write_acl_config "$TMP/acl-server.hcl" "$SECRET"
		write_acl_config "$TMP/acl-client.hcl"
		config=(--config-file "$TMP/acl-server.hcl") client_config=(--config-file "$TMP/acl-client.hcl")
		auth=(-H "@$TMP/management.header")
	fi
	if [[ $WEFT_DNS == client ]]; then
		check_ports_free "${rpc[@]}" "${shttp[@]}" "${sdns[@]}" "$chttp" "$cdns"
		servers=3
	else
		check_ports_free "${rpc[0]}" "${shttp[0]}" "${sdns[0]}"
		servers=1
	fi
	for ((i = 0; i < servers; i++)); do
		joins=()
		for ((j = 0; j < servers; j++)); do
			((j == i)) || joins+=(--retry-join "127.0.0.1:${rpc[j]}")
		done
		start_process "$prefix$((i + 1))" "$WEFT" agent --server --node "s$((i + 1))" \
			--data-dir "$TMP/$prefix$((i + 1))" --bootstrap-expect "$servers" "${joins[@]}" "${config[@]}" \
			--rpc-addr "127.0.0.1:${rpc[i]}" --http-addr "127.0.0.1:${shttp[i]}" \
			--dns-addr "127.0.0.1:${sdns[i]}"
		server_pids+=("$STARTED_PID")
		server_names+=("$prefix$((i + 1))")
	done
	log "started $servers $target server(s) (pids ${server_pids[*]}); waiting for a leader (up to ${WAIT_SECS}s)"
	server_has_leader() { has_leader "${shttp[$1]}"; }
	wait_all "$target server" "the $target cluster had no leader on all $servers servers" "${server_names[*]}" \
		"${server_pids[*]}" server_has_leader
	log "$target leader: $LEADER"
	if ((acl)); then
		server_resolves() { resolves_token management "${shttp[$1]}"; }
		wait_all "$target server" "the $target cluster's servers did not all resolve the management token" \
			"${server_names[*]}" "${server_pids[*]}" server_resolves
		make_bench_token "${shttp[0]}" dns-bench "$DNS_GRANT"
	fi
	pid=${server_pids[0]} port=${sdns[0]} http=${shttp[0]} label="$target (server)" name=${server_names[0]}
	if [[ $WEFT_DNS == client ]]; then
		joins=()
		for ((j = 0; j < servers; j++)); do joins+=(--retry-join "127.0.0.1:${rpc[j]}"); done
		name=${prefix%s}vm1
		start_process "$name" "$WEFT" agent --node "$name" --data-dir "$TMP/$name" "${joins[@]}" "${client_config[@]}" \
			--http-addr "127.0.0.1:$chttp" --dns-addr "127.0.0.1:$cdns"
		# The client agents first: they leave the catalog while the servers are still up.
		STOP_FIRST+=("$STARTED_PID")
		pid=$STARTED_PID port=$cdns http=$chttp label="$target (client agent)"
	fi

	# The registrations: one node per service, through a server's HTTP API,
	# with one curl (keep-alive, 8 at a time) rather than one process each.
	log "$target: registering $SERVICES services"
	for ((i = 0; i < SERVICES; i++)); do
		((i > 0)) && echo next
		printf 'url = "http://127.0.0.1:%s/v1/catalog/register"\nrequest = "PUT"\n' "${shttp[0]}"
		printf 'data = "{\\"Node\\":\\"node-%04d\\",\\"Address\\":\\"%s\\",\\"Service\\":{\\"Service\\":\\"svc-%04d\\",\\"Port\\":80}}"\n' \
			"$i" "$(ip_of "$i")" "$i"
		((acl)) && printf 'header = "@%s"\n' "$TMP/management.header"
		printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nmax-time = 30\n'
	done >"$TMP/register.curl"
	curl --parallel --parallel-max 8 -K "$TMP/register.curl" >"$TMP/register.codes" 2>"$TMP/register.err" || true
	ok=$(grep -c '^200$' "$TMP/register.codes" || true)
	((ok == SERVICES)) || die "$target: only $ok of $SERVICES registrations succeeded (codes: $(sort "$TMP/register.codes" | uniq -c | tr -s ' \n' ' '))"

	# The agent answering DNS must hold them all (a client agent streams them).
	log "waiting for $label to hold all $SERVICES services (up to ${WAIT_SECS}s)"
	deadline=$((SECONDS + WAIT_SECS))
	while :; do
		kill -0 "$pid" 2>/dev/null || {
			show_log "$name"
			die "$label exited"
		}
		held=$(curl -s --max-time 2 "${auth[@]}" "http://127.0.0.1:$http/v1/catalog/services" | grep -o '"svc-[0-9]*"' | wc -l || true)
		((held == SERVICES)) && break
		if ((SECONDS >= deadline)); then
			show_log "$name"
			die "$label holds $held of $SERVICES services after ${WAIT_SECS}s"
		fi
		sleep 0.5
	done
	if ((acl)); then
		# Without a default token, DNS answers as the anonymous token: nothing.
		if command -v dig >/dev/null && [[ -n $(dig +short +time=2 +tries=2 @127.0.0.1 -p "$port" "$(name_of 0)" A || true) ]]; then
			die "$label answered $(name_of 0) before it had a default token: are ACLs on?"
		fi
		wait_until "$label resolving the dns-bench token" "$name" "$pid" resolves_token dns-bench "$http"
		acl_call "$http" management PUT /v1/agent/token/default "{\"Token\":\"$(cat "$TMP/dns-bench.token")\"}"
		denies_anonymous_write "$http" || die "$label did not refuse a KV write without a token (403)"
		log "$target: ACLs on (default deny); DNS answers with a default token of $ACL_POLICIES policies"
	fi
	check_answers "$target" "$port"
	WEFT_PID_OF[$target]=$pid WEFT_PORT_OF[$target]=$port WEFT_LABEL_OF[$target]=$label
}

for t in weft weft-acl; do
	if has_target "$t"; then start_weft "$t"; fi
done

# --------------------------------------------------------- dnsmasq start ----

dnsmasq_pid=""
if has_target dnsmasq; then
	check_ports_free "$DNSMASQ_PORT"
	for ((i = 0; i < SERVICES; i++)); do
		printf '%s %s\n' "$(ip_of "$i")" "$(name_of "$i")"
	done >"$TMP/hosts"
	# Only the hosts file: no /etc/hosts, no upstreams, no config file; bound
	# to 127.0.0.1 only. Answers carry TTL 0 (--local-ttl's default), as Weft's do.
	start_process dnsmasq "$DNSMASQ" --keep-in-foreground --conf-file=/dev/null --port="$DNSMASQ_PORT" \
		--listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --addn-hosts="$TMP/hosts" \
		--pid-file="$TMP/dnsmasq.pid" --user="$(id -un)" --group="$(id -gn)" --log-facility=-
	dnsmasq_pid=$STARTED_PID
	log "$("$DNSMASQ" --version | head -n 1) (pid $dnsmasq_pid)"
fi

# --------------------------------------------------------- unbound start ----

unbound_pid=""
if has_target unbound; then
	check_ports_free "$UNBOUND_PORT"
	{
		cat <<-EOF
			server:
			    interface: 127.0.0.1
			    port: $UNBOUND_PORT
			    do-ip6: no
			    access-control: 127.0.0.0/8 allow
			    username: ""
			    chroot: ""
			    directory: "$TMP"
			    pidfile: ""
			    use-syslog: no
			    logfile: ""
			    verbosity: 1
			    num-threads: $UNBOUND_THREADS
			    so-reuseport: yes
			    module-config: "iterator"
			    local-zone: "service.weft." static
		EOF
		for ((i = 0; i < SERVICES; i++)); do
			printf '    local-data: "%s. 0 IN A %s"\n' "$(name_of "$i")" "$(ip_of "$i")"
		done
		printf 'remote-control:\n    control-enable: no\n'
	} >"$TMP/unbound.conf"
	if command -v unbound-checkconf >/dev/null; then
		unbound-checkconf "$TMP/unbound.conf" >"$TMP/unbound-checkconf.log" 2>&1 ||
			die "unbound-checkconf rejected the config: $(cat "$TMP/unbound-checkconf.log")"
	fi
	start_process unbound "$UNBOUND" -d -c "$TMP/unbound.conf"
	unbound_pid=$STARTED_PID
	log "unbound $("$UNBOUND" -V | sed -n 's/^Version //p' | head -n 1) (pid $unbound_pid, $UNBOUND_THREADS threads)"
fi

# Both are up when they answer (or give up after WAIT_SECS).
wait_answering() { # label port pid
	if ! command -v dig >/dev/null; then
		sleep 1
		kill -0 "$3" 2>/dev/null || die "$1 exited during startup"
		return 0
	fi
	local deadline=$((SECONDS + WAIT_SECS))
	until [[ -n $(dig +short +time=1 +tries=1 @127.0.0.1 -p "$2" "$(name_of 0)" A 2>/dev/null || true) ]]; do
		if ! kill -0 "$3" 2>/dev/null; then
			show_log "$1"
			die "$1 exited during startup"
		fi
		if ((SECONDS >= deadline)); then
			show_log "$1"
			die "$1 did not answer within ${WAIT_SECS}s"
		fi
		sleep 0.2
	done
	check_answers "$1" "$2"
}
has_target dnsmasq && wait_answering dnsmasq "$DNSMASQ_PORT" "$dnsmasq_pid"
has_target unbound && wait_answering unbound "$UNBOUND_PORT" "$unbound_pid"

# ------------------------------------------------------------- the runs -----

for t in weft weft-acl; do
	if has_target "$t"; then run_dnsperf "$t" "${WEFT_PORT_OF[$t]}" "${WEFT_PID_OF[$t]}"; fi
done
has_target dnsmasq && run_dnsperf dnsmasq "$DNSMASQ_PORT" "$dnsmasq_pid"
has_target unbound && run_dnsperf unbound "$UNBOUND_PORT" "$unbound_pid"

fmt() { if [[ -z $1 ]]; then printf -- '-'; else printf '%s' "$1"; fi; }

echo
echo "DNS A queries, $SERVICES names (svc-NNNN.service.weft) on 127.0.0.1, dnsperf ${SECS}s per target," \
	"-c $DNSPERF_CLIENTS -T $DNSPERF_THREADS -q $OUTSTANDING -t 5, $(nproc 2>/dev/null || echo '?') cores"
printf '%-24s  %9s  %6s  %7s  %7s  %6s  %8s  %13s  %12s  %11s\n' \
	target queries/s lost "avg ms" "max ms" "CPU s" "q/CPU s" "dnsperf CPU s" "others CPU s" "not NOERROR"
for t in weft weft-acl dnsmasq unbound; do
	has_target "$t" || continue
	label=${WEFT_LABEL_OF[$t]:-$t}
	[[ $t == unbound ]] && label="unbound ($UNBOUND_THREADS threads)"
	per_cpu=$(awk -v q="${QPS[$t]:-}" -v c="${CPU[$t]:-}" -v s="$SECS" \
		'BEGIN { if (q != "" && c > 0) printf "%.0f", q * s / c; else print "-" }')
	printf '%-24s  %9s  %6s  %7s  %7s  %6s  %8s  %13s  %12s  %11s\n' "$label" \
		"$(fmt "$(awk -v q="${QPS[$t]:-}" 'BEGIN { if (q != "") printf "%.0f", q }')")" \
		"$(fmt "${LOST[$t]:-}")" "$(fmt "${AVG_MS[$t]:-}")" "$(fmt "${MAX_MS[$t]:-}")" "$(fmt "${CPU[$t]:-}")" \
		"$per_cpu" "$(fmt "${PERF_CPU[$t]:-}")" "$(fmt "${OTHER_CPU[$t]:-}")" "$(fmt "${NOT_NOERROR[$t]:-}")"
done

# The issues' goals, next to the figures (reported, never enforced).
ratio_line() { # target peer goal
	local w=${QPS[$1]:-} p=${QPS[$2]:-}
	[[ -n $w && -n $p ]] || return 0
	awk -v w="$w" -v p="$p" -v goal="$3" -v name="$1/$2" 'BEGIN {
		if (p <= 0) exit
		r = w / p
		printf "%-13s %6.2f   (goal >= %.2f: %s)\n", name, r, goal, (r >= goal ? "met" : "not met")
	}'
}
if has_weft; then
	echo
	ratio_line weft dnsmasq 1.0
	ratio_line weft unbound 0.5
	# Issue 14: ACLs on (default deny, a default token of 50 policies) vs off.
	ratio_line weft-acl weft 0.9
fi
