#!/usr/bin/env bash
# raft-kv.sh: replicated KV write throughput and latency, Weft vs etcd, each
# with its server-to-server traffic in plaintext and over TLS, and Weft with
# ACLs on.
#
# Why: Weft's KV store is a Raft log like etcd's; this script measures both
# on the same machine, three servers each, on loopback, with the same load
# generator (kv-load, bench/src/main.rs), so the comparison is like for like.
# Issue 13 asks that Weft with TLS on its server RPC stay within 10% of its
# plaintext writes/s, and at or above etcd's with etcd on TLS too; issue 14
# that Weft with ACLs on (default deny, every write with a token of 50
# policies) stay within 10% of it with ACLs off.
# See bench/README.md for what the figures mean and their caveats.
#
# Steps: build weft and kv-load (release); make a CA and three server
# certificates with `weft tls` (for the TLS targets); start the clusters the
# targets name on 127.0.0.1 (up to five: Weft, Weft with TLS, Weft with
# ACLs, etcd, etcd with TLS); for weft-acl, make 50 policies and a token
# holding them all; for each client count, run kv-load against each; print one table,
# the servers' CPU per write, and where a weft write's time went (each server's
# /v1/agent/metrics before and after each run, subtracted by bench/stages.py);
# then kill -9 the weft and etcd leaders FAILOVER_ROUNDS times under writes
# (the failover and the elections the runs caused); then write RSS_KEYS keys to a Weft cluster and report a server's RSS and
# data-dir size. Everything started here is stopped (and the temp dir
# removed) on exit, on failure and on Ctrl-C.
#
# Environment (all optional):
#   CLIENTS="1 16 64 256"   client counts to run
#   DURATION=10s            length of each run (N, Ns or Nm)
#   VALUE_SIZE=128          value size in bytes
#   TARGETS="weft weft-tls weft-acl etcd etcd-tls"  which systems to run:
#                           weft      3 Weft servers, RPC in plaintext
#                           weft-tls  3 Weft servers, RPC (Raft, forwarded
#                                     writes) over TLS 1.3, certificates from `weft tls`
#                           weft-acl  3 Weft servers as `weft` (plaintext) but with
#                                     ACLs on, default deny; kv-load sends a token
#                                     holding 50 policies (1 grants the writes)
#                           etcd      3 etcd members, plaintext
#                           etcd-tls  3 etcd members, client and peer URLs over
#                                     TLS, certificates from the same CA
#   FAILOVER_ROUNDS=5       kill -9 rounds of the weft and etcd leaders after the runs
#                           (0 skips them): the failover, from the kill to the first
#                           write acknowledged again, and the elections the runs caused
#   WEFT_FLAGS=""           extra flags for every Weft server (e.g. "--raft-multiplier 2")
#   RSS_KEYS=100000         keys written for the memory/disk report (0 skips it);
#                           to the weft cluster (else weft-tls, else weft-acl)
#   SETTLE=10               seconds to wait before the last disk-size reading
#   WAIT_SECS=60            how long a cluster may take to elect a leader
#   BUILD=1                 0: do not run cargo, use existing binaries
#   WEFT=path KV_LOAD=path  binaries to use (default target/release/...)
#   INSTALL_ETCD=1          0: never try `apt-get install etcd-server`
#   KEEP_TMP=0              1: keep the temp dir (server logs, certificates) for a post-mortem
#   RESULTS=file            also save kv-load's JSON lines to this file
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEFT="${WEFT:-$TARGET_DIR/release/weft}"
KV_LOAD="${KV_LOAD:-$TARGET_DIR/release/kv-load}"
CLIENTS="${CLIENTS:-1 16 64 256}"
DURATION="${DURATION:-10s}"
VALUE_SIZE="${VALUE_SIZE:-128}"
TARGETS="${TARGETS:-weft weft-tls weft-acl etcd etcd-tls}"
RSS_KEYS="${RSS_KEYS:-100000}"
FAILOVER_ROUNDS="${FAILOVER_ROUNDS:-5}"
SETTLE="${SETTLE:-10}"
WAIT_SECS="${WAIT_SECS:-60}"
BUILD="${BUILD:-1}"
INSTALL_ETCD="${INSTALL_ETCD:-1}"
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS="${RESULTS:-}"

ALL_TARGETS=(weft weft-tls weft-acl etcd etcd-tls)

# Loopback ports. Weft: RPC, HTTP and DNS per server. etcd: client and peer
# per member (not 2379/2380, so a system etcd does not get in the way).
WEFT_RPC=(18301 18311 18321)
WEFT_HTTP=(18501 18511 18521)
WEFT_DNS=(18601 18611 18621)
WEFT_TLS_RPC=(18331 18341 18351)
WEFT_TLS_HTTP=(18531 18541 18551)
WEFT_TLS_DNS=(18631 18641 18651)
WEFT_ACL_RPC=(18361 18371 18381)
WEFT_ACL_HTTP=(18561 18571 18581)
WEFT_ACL_DNS=(18661 18671 18681)
ETCD_CLIENT=(22379 22389 22399)
ETCD_PEER=(22380 22390 22400)
ETCD_TLS_CLIENT=(23379 23389 23399)
ETCD_TLS_PEER=(23380 23390 23400)

LOG_TAG=raft-kv TMP_CONTENTS="server logs, data and certificates"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }
has_weft() { has_target weft || has_target weft-tls || has_target weft-acl; }
has_etcd() { has_target etcd || has_target etcd-tls; }
has_tls() { has_target weft-tls || has_target etcd-tls; }

# DURATION as whole seconds (for the outer safety timeout around kv-load).
load_secs() { if [[ $1 =~ ^([0-9]+)m$ ]]; then echo $((BASH_REMATCH[1] * 60)); else duration_secs "$1"; fi; }

# Runs kv-load and sets LOAD_OUT to its one-line JSON report ("" if none).
# It runs in the background so that `wait` (unlike a foreground command) is
# interrupted by Ctrl-C or TERM, and the trap stops it with the servers.
kv_load() { # target clients duration extra-args... -- addrs...
	local target=$1 clients=$2 duration=$3
	shift 3
	local extra=() addrs=()
	while (($#)) && [[ $1 != -- ]]; do
		extra+=("$1")
		shift
	done
	shift # --
	local addr
	for addr in "$@"; do addrs+=(--addr "$addr"); done
	local secs rc=0
	secs=$(load_secs "$duration") || secs=600
	LOAD_OUT=""
	# `timeout` is only a backstop: kv-load stops by itself at duration + grace.
	timeout -k 5 $((secs + 60)) "$KV_LOAD" --target "$target" "${addrs[@]}" --clients "$clients" \
		--duration "$duration" --value-size "$VALUE_SIZE" --format json "${extra[@]}" \
		>"$TMP/kv-load.out" 2>"$TMP/kv-load.err" &
	LOAD_PID=$!
	wait "$LOAD_PID" || rc=$?
	LOAD_PID=""
	if ((rc != 0)); then
		log "kv-load against $target with $clients clients exited with $rc:"
		sed 's/^/    /' "$TMP/kv-load.err" >&2
	fi
	LOAD_OUT=$(head -n 1 "$TMP/kv-load.out")
	if [[ $LOAD_OUT == '{'* ]]; then
		printf '%s\n' "$LOAD_OUT" >>"$TMP/results.jsonl"
	else
		LOAD_OUT=""
	fi
}

# ---------------------------------------------------------------- checks ----

[[ $VALUE_SIZE =~ ^[0-9]+$ ]] || die "VALUE_SIZE must be a number of bytes, not '$VALUE_SIZE'"
[[ $RSS_KEYS =~ ^[0-9]+$ ]] || die "RSS_KEYS must be a number, not '$RSS_KEYS'"
[[ $FAILOVER_ROUNDS =~ ^[0-9]+$ ]] || die "FAILOVER_ROUNDS must be a number, not '$FAILOVER_ROUNDS'"
[[ $SETTLE =~ ^[0-9]+$ ]] || die "SETTLE must be a number of seconds, not '$SETTLE'"
[[ $WAIT_SECS =~ ^[0-9]+$ ]] || die "WAIT_SECS must be a number of seconds, not '$WAIT_SECS'"
load_secs "$DURATION" >/dev/null || die "DURATION must look like 10, 10s or 2m, not '$DURATION'"
for c in $CLIENTS; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be positive numbers, not '$c'"
done
for t in $TARGETS; do
	[[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "TARGETS may name only ${ALL_TARGETS[*]}, not '$t'"
done
need_tools curl du awk sed timeout

# ----------------------------------------------------------------- build ----

# `weft` runs the Weft clusters and also makes the certificates etcd-tls uses.
needs_weft() { has_weft || has_target etcd-tls; }
if [[ $BUILD != 0 ]]; then
	packages=(-p weft-bench)
	needs_weft && packages+=(-p weft-cli)
	log "building: cargo build --release ${packages[*]}"
	(cd "$ROOT" && cargo build --release "${packages[@]}") || die "cargo build failed"
fi
[[ -x $KV_LOAD ]] || die "kv-load not found at $KV_LOAD (build it: cargo build --release -p weft-bench)"
if needs_weft && [[ ! -x $WEFT ]]; then
	die "weft not found at $WEFT (build it: cargo build --release -p weft-cli)"
fi

make_tmp raft-kv

if has_etcd && ! command -v etcd >/dev/null; then
	if [[ $INSTALL_ETCD == 1 && $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
		log "etcd not found; installing Debian's etcd-server (apt-get install -y etcd-server)"
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get install -y etcd-server >"$TMP/apt.log" 2>&1; then
			if apt-get update >>"$TMP/apt.log" 2>&1; then
				apt-get install -y etcd-server >>"$TMP/apt.log" 2>&1 || true
			fi
		fi
		command -v etcd >/dev/null || tail -n 5 "$TMP/apt.log" >&2
	fi
	if ! command -v etcd >/dev/null; then
		log "etcd is not installed; to compare with it, run as root: apt-get install -y etcd-server"
		log "continuing with Weft only"
		TARGETS=" $TARGETS "
		TARGETS=${TARGETS// etcd-tls / }
		TARGETS=${TARGETS// etcd / }
	fi
fi
has_weft || has_etcd || die "nothing to run (TARGETS='$TARGETS')"

# ---------------------------------------------------------- certificates ----

# `weft tls` writes into its working directory: a relative WEFT=path must
# still name the binary from there.
if [[ $WEFT == */* && $WEFT != /* ]]; then WEFT="$PWD/$WEFT"; fi

# One CA and three server certificates from `weft tls`, shared by the Weft
# and etcd TLS clusters (server i of each uses certificate i). Each
# certificate names server.dc1.weft and localhost (what `weft tls` always
# adds) and, with -additional-ipaddress, 127.0.0.1, so that etcd's peers
# and kv-load, which connect by IP, can verify it too.
CA_FILE="" CERT_FILES=() KEY_FILES=()
if has_tls; then
	mkdir -p "$TMP/certs"
	(cd "$TMP/certs" && "$WEFT" tls ca create) >"$TMP/certs/ca.out" 2>&1 ||
		die "weft tls ca create: $(cat "$TMP/certs/ca.out")"
	CA_FILE=$(sed -n 's/^==> Saved \(.*-agent-ca\.pem\)$/\1/p' "$TMP/certs/ca.out")
	[[ -f $CA_FILE ]] || die "weft tls ca create did not say where it saved the CA: $(cat "$TMP/certs/ca.out")"
	for i in 0 1 2; do
		(cd "$TMP/certs" && "$WEFT" tls cert create -server -additional-ipaddress 127.0.0.1) >"$TMP/certs/cert$i.out" 2>&1 ||
			die "weft tls cert create -server: $(cat "$TMP/certs/cert$i.out")"
		saved=()
		mapfile -t saved < <(sed -n 's/^==> Saved //p' "$TMP/certs/cert$i.out")
		[[ ${#saved[@]} == 2 && -f ${saved[0]} && -f ${saved[1]} ]] ||
			die "weft tls cert create -server did not save a certificate and a key: $(cat "$TMP/certs/cert$i.out")"
		CERT_FILES+=("${saved[0]}") KEY_FILES+=("${saved[1]}")
	done
	log "made a CA and 3 server certificates in $TMP/certs with weft tls"
fi

# ------------------------------------------------------------ weft start ----

# The addresses kv-load gets for each target, space-separated.
declare -A TARGET_ADDRS=()
declare -A SERVER_PID=() # "<target>/<index>": server (and etcd member) PIDs
declare -A RESTART=()    # "<target>/<index>": its log name and command, to start it again
declare -A HTTP_OF=()    # "<target>/<index>": its HTTP (etcd: client) port
declare -A RPC_OF=()     # "<target>/<index>": a Weft server's RPC port
declare -A TERM_START=() TERM_BEFORE=() FAILOVER_MEDIAN=()
read -r -a WEFT_FLAGS <<<"${WEFT_FLAGS:-}"

# The leader's index in target's cluster ("" if none is known).
leader_of() { # target
	local t=$1 i j answer status member leader
	for i in 0 1 2; do
		kill -0 "${SERVER_PID[$t/$i]}" 2>/dev/null || continue
		if [[ $t == weft* ]]; then
			answer=$(curl -sf --max-time 2 "http://127.0.0.1:${HTTP_OF[$t/$i]}/v1/status/leader") || continue
			for j in 0 1 2; do
				if [[ $answer == "\"127.0.0.1:${RPC_OF[$t/$j]}\"" ]]; then
					echo "$j"
					return
				fi
			done
		else
			status=$(curl -s --max-time 2 -X POST -d '{}' "http://127.0.0.1:${HTTP_OF[$t/$i]}/v3/maintenance/status") || continue
			member=$(sed -nE 's/.*"member_id":"?([0-9]+).*/\1/p' <<<"$status")
			leader=$(sed -nE 's/.*"leader":"?([0-9]+).*/\1/p' <<<"$status")
			if [[ -n $member && $member == "$leader" ]]; then
				echo "$i"
				return
			fi
		fi
	done
}

# The Raft term server i of target's cluster is in: its elections so far.
term_of() { # target index
	local t=$1 i=$2
	if [[ $t == weft* ]]; then
		curl -sf --max-time 2 "http://127.0.0.1:${HTTP_OF[$t/$i]}/v1/agent/self" | sed -nE 's/.*"term":"?([0-9]+).*/\1/p'
	else
		curl -s --max-time 2 -X POST -d '{}' "http://127.0.0.1:${HTTP_OF[$t/$i]}/v3/maintenance/status" |
			sed -nE 's/.*"raft_term":"?([0-9]+).*/\1/p'
	fi
}


# Sets TARGET_ADDRS[target] to the cluster's addresses with the leader's
# last: kv-load gives client i address i mod 3, so a single client writes
# through a follower (forwarded to the leader, as 2 of 3 clients' writes
# are) in every cluster, not to whichever server happened to win the
# election; with 64 or 256 clients each cluster's leader gets the same share.
leader_last() { # target leader-index addresses...
	local target=$1 leader=$2 i ordered=()
	shift 2
	local -a all=("$@")
	for i in "${!all[@]}"; do ((i == leader)) || ordered+=("${all[i]}"); done
	ordered+=("${all[leader]}")
	TARGET_ADDRS[$target]="${ordered[*]}"
	log "$target: kv-load addresses ${ordered[*]} (the leader's last)"
}

# True when a TLS 1.3 handshake with 127.0.0.1:<port>, verifying the
# certificate against the CA and the name server.dc1.weft, succeeds (the
# HTTP answer does not matter).
speaks_tls() { # port
	local code
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --tlsv1.3 --cacert "$CA_FILE" \
		--resolve "server.dc1.weft:$1:127.0.0.1" "https://server.dc1.weft:$1/" 2>/dev/null) || return 1
	[[ $code =~ ^[0-9]+$ ]]
}

# What the weft-acl token's one granting policy allows: the keys kv-load
# writes in the runs (bench-c<clients>/...) and in the memory/disk phase
# (rss/..., when that is weft-acl's). Its other 49 policies grant unrelated
# things (make_bench_token in lib.sh).
KV_GRANT='key_prefix "bench-c" { policy = "write" }
key_prefix "rss/" { policy = "write" }'

start_weft_cluster() { # target (weft | weft-tls | weft-acl)
	local target=$1 tls=0 acl=0 prefix i j label
	local -a rpc http dns joins config pids=() names=() addrs=()
	if [[ $target == weft-tls ]]; then
		tls=1 prefix=tls-s rpc=("${WEFT_TLS_RPC[@]}") http=("${WEFT_TLS_HTTP[@]}") dns=("${WEFT_TLS_DNS[@]}")
	elif [[ $target == weft-acl ]]; then
		acl=1 prefix=acl-s rpc=("${WEFT_ACL_RPC[@]}") http=("${WEFT_ACL_HTTP[@]}") dns=("${WEFT_ACL_DNS[@]}")
		# The servers make this management token at start (acl.tokens.initial_management).
		new_secret management
		write_acl_config "$TMP/acl.hcl" "$SECRET"
	else
		prefix=s rpc=("${WEFT_RPC[@]}") http=("${WEFT_HTTP[@]}") dns=("${WEFT_DNS[@]}")
	fi
	check_ports_free "${rpc[@]}" "${http[@]}" "${dns[@]}"
	for i in 0 1 2; do
		label="$prefix$((i + 1))"
		joins=()
		for j in 0 1 2; do
			((j == i)) || joins+=(--retry-join "127.0.0.1:${rpc[j]}")
		done
		config=()
		if ((tls)); then
			# verify_incoming, verify_outgoing and verify_server_hostname are on by default.
			cat >"$TMP/$label.hcl" <<-HCL
				tls {
				  defaults {
				    ca_file   = "$CA_FILE"
				    cert_file = "${CERT_FILES[i]}"
				    key_file  = "${KEY_FILES[i]}"
				  }
				}
			HCL
			config=(--config-file "$TMP/$label.hcl")
		fi
		((acl)) && config=(--config-file "$TMP/acl.hcl")
		local cmd=("$WEFT" agent --server --node "s$((i + 1))" \
			--data-dir "$TMP/$label" --bootstrap-expect 3 "${joins[@]}" "${config[@]}" \
			--rpc-addr "127.0.0.1:${rpc[i]}" --http-addr "127.0.0.1:${http[i]}" \
			--dns-addr "127.0.0.1:${dns[i]}" "${WEFT_FLAGS[@]}")
		start_process "$label" "${cmd[@]}"
		# What the failover rounds restart a killed server with.
		RESTART[$target/$i]="$label $(printf '%q ' "${cmd[@]}")"
		HTTP_OF[$target/$i]=${http[i]}
		RPC_OF[$target/$i]=${rpc[i]}
		pids+=("$STARTED_PID")
		names+=("$label")
		addrs+=("127.0.0.1:${http[i]}")
		SERVER_PID[$target/$i]=$STARTED_PID
	done
	log "started $target servers (pids ${pids[*]}); waiting for a leader (up to ${WAIT_SECS}s)"
	server_has_leader() { has_leader "${http[$1]}"; }
	wait_all "$target server" "the $target cluster had no leader on all 3 servers" "${names[*]}" "${pids[*]}" server_has_leader
	log "$target leader: $LEADER"
	TERM_START[$target]=$(term_of "$target" 0)
	for i in 0 1 2; do
		if [[ $LEADER == "\"127.0.0.1:${rpc[i]}\"" ]]; then
			leader_last "$target" "$i" "${addrs[@]}"
			break
		fi
	done
	[[ -n ${TARGET_ADDRS[$target]:-} ]] || die "$target: the leader $LEADER is none of the servers"
	if ((tls)); then
		for i in 0 1 2; do
			speaks_tls "${rpc[i]}" || die "$target: server ${names[i]}'s RPC port ${rpc[i]} does not answer TLS 1.3 with its certificate"
		done
		log "$target: all 3 RPC ports speak TLS 1.3 with certificates from the CA"
	fi
	if ((acl)); then
		server_resolves() { resolves_token "$1" "${http[$2]}"; }
		wait_all "$target server" "the $target cluster's servers did not all resolve the management token" \
			"${names[*]}" "${pids[*]}" server_resolves management
		make_bench_token "${http[0]}" kv-bench "$KV_GRANT"
		wait_all "$target server" "the $target cluster's servers did not all resolve the kv-bench token" \
			"${names[*]}" "${pids[*]}" server_resolves kv-bench
		for i in 0 1 2; do
			denies_anonymous_write "${http[i]}" || die "$target: server ${names[i]} did not refuse a KV write without a token (403)"
		done
		log "$target: ACLs on (default deny, a write without a token is refused); kv-load's token holds $ACL_POLICIES policies"
	fi
}

for t in weft weft-tls weft-acl; do
	if has_target "$t"; then start_weft_cluster "$t"; fi
done

# ------------------------------------------------------------ etcd start ----

start_etcd_cluster() { # target (etcd | etcd-tls)
	local target=$1 tls=0 scheme=http prefix i cluster="" client_url peer_url
	local -a client peer tls_flags pids=() names=() addrs=()
	if [[ $target == etcd-tls ]]; then
		tls=1 scheme=https prefix=tls-e client=("${ETCD_TLS_CLIENT[@]}") peer=("${ETCD_TLS_PEER[@]}")
	else
		prefix=e client=("${ETCD_CLIENT[@]}") peer=("${ETCD_PEER[@]}")
	fi
	check_ports_free "${client[@]}" "${peer[@]}"
	for i in 0 1 2; do
		cluster+="${cluster:+,}e$((i + 1))=$scheme://127.0.0.1:${peer[i]}"
	done
	for i in 0 1 2; do
		client_url="$scheme://127.0.0.1:${client[i]}"
		peer_url="$scheme://127.0.0.1:${peer[i]}"
		tls_flags=()
		if ((tls)); then
			# Clients: server-side TLS only. etcd turns --trusted-ca-file into
			# client certificate authentication (whatever --client-cert-auth
			# says), which kv-load does not do, so it is left out. Peers:
			# mutual TLS, as between Weft's servers.
			tls_flags=(--cert-file "${CERT_FILES[i]}" --key-file "${KEY_FILES[i]}"
				--peer-cert-file "${CERT_FILES[i]}" --peer-key-file "${KEY_FILES[i]}"
				--peer-trusted-ca-file "$CA_FILE" --peer-client-cert-auth)
		fi
		local cmd=(etcd --name "e$((i + 1))" --data-dir "$TMP/$prefix$((i + 1))" \
			--listen-client-urls "$client_url" --advertise-client-urls "$client_url" \
			--listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" \
			--initial-cluster "$cluster" --initial-cluster-state new \
			--initial-cluster-token "weft-raft-kv-$target-$$" "${tls_flags[@]}" --logger zap --log-outputs stderr \
			--pre-vote)
		start_process "$prefix$((i + 1))" "${cmd[@]}"
		RESTART[$target/$i]="$prefix$((i + 1)) $(printf '%q ' "${cmd[@]}")"
		HTTP_OF[$target/$i]=${client[i]}
		SERVER_PID[$target/$i]=$STARTED_PID
		pids+=("$STARTED_PID")
		names+=("$prefix$((i + 1))")
		addrs+=("127.0.0.1:${client[i]}")
	done
	log "started $target members (pids ${pids[*]}); waiting for health (up to ${WAIT_SECS}s)"
	etcd_call() { # member-index path [JSON body to POST]
		local args=(-s --max-time 2)
		((tls)) && args+=(--cacert "$CA_FILE")
		(($# > 2)) && args+=(-X POST -d "$3")
		curl "${args[@]}" "$scheme://127.0.0.1:${client[$1]}$2" || true
	}
	member_healthy() { [[ $(etcd_call "$1" /health) == *'"health":"true"'* ]]; }
	wait_all "$target member" "the $target cluster was not healthy on all 3 members" "${names[*]}" "${pids[*]}" member_healthy
	log "$target healthy"
	TERM_START[$target]=$(term_of "$target" 0)
	# The leader: the member whose own ID is the leader's in its status.
	local status member leader
	for i in 0 1 2; do
		status=$(etcd_call "$i" /v3/maintenance/status '{}')
		member=$(sed -nE 's/.*"member_id":"?([0-9]+).*/\1/p' <<<"$status")
		leader=$(sed -nE 's/.*"leader":"?([0-9]+).*/\1/p' <<<"$status")
		if [[ -n $member && $member == "$leader" ]]; then
			leader_last "$target" "$i" "${addrs[@]}"
			break
		fi
	done
	[[ -n ${TARGET_ADDRS[$target]:-} ]] || die "$target: no member says it is the leader"
}

if has_etcd; then
	log "$(etcd --version | head -n 1)"
	for t in etcd etcd-tls; do
		if has_target "$t"; then start_etcd_cluster "$t"; fi
	done
fi

# ------------------------------------------------------------- the runs -----

declare -A KV_RATE KV_P50 KV_P99 KV_ERR KV_WRITES KV_CPU # by "<target>/<clients>"

# CPU time (user + system, ms) the three servers of target have used so far.
cluster_cpu_ms() { # target
	local i ticks=0 stat
	for i in 0 1 2; do
		stat=$(cat "/proc/${SERVER_PID[$1/$i]}/stat" 2>/dev/null) || continue
		# Fields 14 and 15 (utime, stime), counted after the ")" that ends the name.
		read -r -a fields <<<"${stat##*) }"
		ticks=$((ticks + fields[11] + fields[12]))
	done
	echo $((ticks * 1000 / $(getconf CLK_TCK)))
}

# Saves each weft server's /v1/agent/metrics (its write stages' totals) as
# $TMP/stages/<clients>.<server>.<when>.json, and which server leads.
read_stages() { # clients before|after
	mkdir -p "$TMP/stages"
	local i
	for i in 0 1 2; do
		curl -sf --max-time 5 "http://127.0.0.1:${HTTP_OF[weft/$i]}/v1/agent/metrics" \
			>"$TMP/stages/$1.$i.$2.json" || echo '{}' >"$TMP/stages/$1.$i.$2.json"
	done
	STAGES_LEADER[$1]=$(leader_of weft)
}
declare -A STAGES_LEADER=()
for c in $CLIENTS; do
	for t in "${ALL_TARGETS[@]}"; do
		has_target "$t" || continue
		log "$t: $c client(s) for $DURATION"
		read -r -a addrs <<<"${TARGET_ADDRS[$t]}"
		extra=(--key-prefix "bench-c$c")
		# kv-load speaks HTTPS to etcd-tls's client URLs, verifying them against the CA.
		if [[ $t == etcd-tls ]]; then extra+=(--ca-file "$CA_FILE"); fi
		# weft-acl: every write carries the 50-policy token.
		if [[ $t == weft-acl ]]; then extra+=(--token-file "$TMP/kv-bench.token"); fi
		if [[ $t == weft ]]; then read_stages "$c" before; fi
		cpu_before=$(cluster_cpu_ms "$t")
		kv_load "${t%%-*}" "$c" "$DURATION" "${extra[@]}" -- "${addrs[@]}"
		KV_CPU[$t/$c]=$(($(cluster_cpu_ms "$t") - cpu_before))
		if [[ $t == weft ]]; then read_stages "$c" after; fi
		KV_RATE[$t/$c]=$(json_field "$LOAD_OUT" writes_per_sec)
		KV_WRITES[$t/$c]=$(json_field "$LOAD_OUT" writes)
		KV_P50[$t/$c]=$(json_field "$LOAD_OUT" p50_ms)
		KV_P99[$t/$c]=$(json_field "$LOAD_OUT" p99_ms)
		KV_ERR[$t/$c]=$(json_field "$LOAD_OUT" errors)
	done
done

# One column pair (writes/s, p50/p99) per target, then the ratios of writes/s.
row() { printf '%7s  %9s %13s  %9s %13s  %9s %13s  %9s %13s  %9s %13s  %9s  %9s  %9s  %9s  %s\n' "$@"; }
latency() { printf '%s/%s' "$(fmt_num "${KV_P50[$1]:-}" %.2f)" "$(fmt_num "${KV_P99[$1]:-}" %.2f)"; }
echo
echo "KV PUT, 3 servers each on 127.0.0.1, ${VALUE_SIZE} B values, $DURATION per run, fsync on;" \
	"w/s: writes/s; p50/p99 in ms; -tls: server-to-server (and etcd's client) traffic over TLS;" \
	"weft-acl: ACLs on, default deny, a token of $ACL_POLICIES policies"
row clients "weft w/s" "p50/p99" "weft-tls" "p50/p99" "weft-acl" "p50/p99" "etcd w/s" "p50/p99" "etcd-tls" "p50/p99" \
	"weft/etcd" "tls/plain" "acl/plain" "wtls/etls" "errors w/wt/wa/e/et"
for c in $CLIENTS; do
	w=${KV_RATE[weft/$c]:-} wt=${KV_RATE[weft-tls/$c]:-} wa=${KV_RATE[weft-acl/$c]:-}
	e=${KV_RATE[etcd/$c]:-} et=${KV_RATE[etcd-tls/$c]:-}
	errors=""
	for t in "${ALL_TARGETS[@]}"; do errors+="${errors:+/}$(fmt_num "${KV_ERR[$t/$c]:-}" %s)"; done
	row "$c" "$(fmt_num "$w" %.0f)" "$(latency "weft/$c")" "$(fmt_num "$wt" %.0f)" "$(latency "weft-tls/$c")" \
		"$(fmt_num "$wa" %.0f)" "$(latency "weft-acl/$c")" \
		"$(fmt_num "$e" %.0f)" "$(latency "etcd/$c")" "$(fmt_num "$et" %.0f)" "$(latency "etcd-tls/$c")" \
		"$(ratio "$w" "$e")" "$(ratio "$wt" "$w")" "$(ratio "$wa" "$w")" "$(ratio "$wt" "$et")" "$errors"
done
# The issue's goals, next to the figures (never enforced).
if has_target weft-tls && { has_target weft || has_target etcd-tls; }; then
	goals=()
	for c in $CLIENTS; do
		wt=${KV_RATE[weft-tls/$c]:-}
		if has_target weft; then goals+=("$c clients: tls/plain $(ratio "$wt" "${KV_RATE[weft/$c]:-}") ($(goal "$(ratio "$wt" "${KV_RATE[weft/$c]:-}")" '>=' 0.90))"); fi
		if has_target etcd-tls && ((c == 64 || c == 256)); then
			goals+=("$c clients: wtls/etls $(ratio "$wt" "${KV_RATE[etcd-tls/$c]:-}") ($(goal "$(ratio "$wt" "${KV_RATE[etcd-tls/$c]:-}")" '>=' 1))")
		fi
	done
	if ((${#goals[@]} > 0)); then
		echo "goals (issue 13): tls/plain >= 0.90 at every client count; wtls/etls >= 1.00 at 64 and 256 clients"
		for g in "${goals[@]}"; do echo "  $g"; done
	fi
fi
if has_target weft-acl && has_target weft; then
	echo "goal (issue 14): acl/plain >= 0.90 at every client count (ACLs on, a token of $ACL_POLICIES policies, vs off)"
	for c in $CLIENTS; do
		wa=$(ratio "${KV_RATE[weft-acl/$c]:-}" "${KV_RATE[weft/$c]:-}")
		echo "  $c clients: acl/plain $wa ($(goal "$wa" '>=' 0.90))"
	done
fi

# CPU per write: the three servers' user + system time over the run, per
# acknowledged write (on 2 cores, what bounds writes/s under load).
echo
echo "server CPU per write (ms, all three servers, user + system):"
for c in $CLIENTS; do
	line="  $c client(s):"
	for t in "${ALL_TARGETS[@]}"; do
		has_target "$t" || continue
		writes=${KV_WRITES[$t/$c]:-0}
		if ((writes > 0)); then
			line+=" $t $(awk -v cpu="${KV_CPU[$t/$c]}" -v w="$writes" 'BEGIN { printf "%.3f", cpu / w }')"
		fi
	done
	echo "$line"
done

# Where a write's time went in each weft run: per stage and server, the
# mean of one measurement and how many the run made per write.
if has_target weft; then
	echo
	echo "weft: where a write's time goes (mean ms of one measurement, and measurements per write;"
	echo "  the clients write through the followers in turn, which forward to the leader)"
	for c in $CLIENTS; do
		leader=${STAGES_LEADER[$c]:-}
		[[ -n $leader && -n ${KV_WRITES[weft/$c]:-} ]] || continue
		echo " $c client(s), ${KV_WRITES[weft/$c]} writes:"
		args=()
		for i in 0 1 2; do
			role="follower $i"
			((i == leader)) && role="leader $i"
			args+=("$role=$TMP/stages/$c.$i.before.json,$TMP/stages/$c.$i.after.json")
		done
		python3 "$ROOT/bench/stages.py" "${KV_WRITES[weft/$c]}" "${args[@]}"
	done
fi

# ------------------------------------------------------------- failover ----

# kill -9 of the leader while two clients write through the two other
# servers, FAILOVER_ROUNDS times per plaintext cluster (the killed server is
# started again between rounds). kv-load's longest stall between two
# acknowledged writes is the failover: from the kill to the first write the
# new leader acknowledges (plus at most one write's latency before the kill).
declare -A STALLS=()
FAILOVER_TARGETS=()
for t in weft etcd; do if has_target "$t"; then FAILOVER_TARGETS+=("$t"); fi; done
if ((FAILOVER_ROUNDS > 0 && ${#FAILOVER_TARGETS[@]} > 0)); then
	for t in "${FAILOVER_TARGETS[@]}"; do TERM_BEFORE[$t]=$(term_of "$t" 0); done
	for t in "${FAILOVER_TARGETS[@]}"; do
		for round in $(seq 1 "$FAILOVER_ROUNDS"); do
			leader=""
			for _ in $(seq 1 100); do
				leader=$(leader_of "$t")
				[[ -n $leader ]] && break
				sleep 0.1
			done
			[[ -n $leader ]] || die "$t: no leader before failover round $round"
			# The same leader a second later: not one the last restart is unseating.
			sleep 1
			[[ $(leader_of "$t") == "$leader" ]] || log "$t round $round: the leader moved just before the kill"
			addrs=()
			for i in 0 1 2; do ((i == leader)) || addrs+=("127.0.0.1:${HTTP_OF[$t/$i]}"); done
			(
				sleep 2
				kill -KILL "${SERVER_PID[$t/$leader]}"
			) &
			killer=$!
			kv_load "$t" 2 6s --key-prefix "failover-$round" -- "${addrs[@]}"
			wait "$killer" || true
			stall=$(json_field "$LOAD_OUT" longest_stall_ms)
			STALLS[$t]+="${STALLS[$t]:+ }${stall:-?}"
			log "$t round $round: killed server $((leader + 1)); writes stalled ${stall:-?} ms"
			# Back (and caught up) before the next round.
			read -r name cmd <<<"${RESTART[$t/$leader]}"
			eval "start_process $name $cmd"
			SERVER_PID[$t/$leader]=$STARTED_PID
			sleep 4
		done
	done
	echo
	echo "Failover: kill -9 of the leader while 2 clients write through the other servers;" \
		"the longest stall between two acknowledged writes, ms, $FAILOVER_ROUNDS rounds"
	for t in "${FAILOVER_TARGETS[@]}"; do
		FAILOVER_MEDIAN[$t]=$(tr ' ' '\n' <<<"${STALLS[$t]}" | median)
		printf '  %-5s median %6s  max %6s  (%s)\n' "$t" "$(fmt_num "${FAILOVER_MEDIAN[$t]}" %.0f)" \
			"$(fmt_num "$(tr ' ' '\n' <<<"${STALLS[$t]}" | sort -g | tail -n 1)" %.0f)" "${STALLS[$t]}"
	done
	if has_target weft && has_target etcd; then
		echo "  weft/etcd median $(ratio "${FAILOVER_MEDIAN[weft]}" "${FAILOVER_MEDIAN[etcd]}")"
	fi
	echo "goal (issue 19): failover <= 1000 ms, with no election during the load runs; elections during them:"
	for t in "${FAILOVER_TARGETS[@]}"; do
		echo "  $t: $((${TERM_BEFORE[$t]:-0} - ${TERM_START[$t]:-0})) (term ${TERM_START[$t]:-?} -> ${TERM_BEFORE[$t]:-?})"
	done
fi

# ------------------------------------------------- Weft memory and disk -----

rss_of() { awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
du_of() { du -sb "$1" 2>/dev/null | awk '{ printf "%d B (%.1f MiB)", $1, $1 / 1048576 }'; }

if has_weft && ((RSS_KEYS > 0)); then
	rss_extra=()
	if has_target weft; then
		rss_target=weft prefix=s rss_rpc=("${WEFT_RPC[@]}")
	elif has_target weft-tls; then
		rss_target=weft-tls prefix=tls-s rss_rpc=("${WEFT_TLS_RPC[@]}")
	else
		rss_target=weft-acl prefix=acl-s rss_rpc=("${WEFT_ACL_RPC[@]}") rss_extra=(--token-file "$TMP/kv-bench.token")
	fi
	read -r -a addrs <<<"${TARGET_ADDRS[$rss_target]}"
	# Report the leader: it does the most work (replication to both followers).
	idx=0 role="not the leader"
	leader=$(curl -s --max-time 2 "http://${addrs[0]}/v1/status/leader" || true)
	for i in 0 1 2; do
		if [[ $leader == "\"127.0.0.1:${rss_rpc[i]}\"" ]]; then
			idx=$i role="leader"
		fi
	done
	name="$prefix$((idx + 1))"
	pid=${SERVER_PID[$rss_target/$idx]}
	dir="$TMP/$name"
	echo
	echo "$rss_target server $name (pid $pid, $role):"
	usage() { printf '  %-27s RSS %s, data dir %s\n' "$1:" "$(rss_of "$pid")" "$(du_of "$dir")"; }
	usage "before $RSS_KEYS writes"
	log "$rss_target: writing $RSS_KEYS keys with 64 clients"
	kv_load weft 64 600s --count "$RSS_KEYS" --key-prefix rss "${rss_extra[@]}" -- "${addrs[@]}"
	written=$(json_field "$LOAD_OUT" writes)
	usage "right after ${written:-?} writes"
	sleep "$SETTLE"
	usage "${SETTLE}s later"
	kill -0 "$pid" 2>/dev/null || log "warning: Weft server $name is no longer running"
fi

if [[ -n $RESULTS && -f $TMP/results.jsonl ]]; then
	cp -- "$TMP/results.jsonl" "$RESULTS" && log "kv-load reports saved to $RESULTS"
fi
