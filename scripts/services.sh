#!/usr/bin/env bash
# Make the local PostgreSQL and RabbitMQ ready for `make run` and `make test`:
# PostgreSQL on 127.0.0.1:5432 with wal_level=logical and user postgres, and
# RabbitMQ on 127.0.0.1:5672. It installs (Debian-like systems, as root) and
# starts what is missing, switches wal_level to logical, and waits until both
# accept connections. It connects to 127.0.0.1 only, and when all is ready it
# only runs a few checks, so it is fast enough to run before every test run.
#
# Usage: scripts/services.sh [--check]
#   --check   report the state and change nothing; exit 1 when not ready
#
# Environment:
#   WALRELAY_PG_PORT        PostgreSQL port on 127.0.0.1 (default 5432)
#   WALRELAY_AMQP_PORT      RabbitMQ AMQP port on 127.0.0.1 (default 5672)
#   WALRELAY_SERVICES_WAIT  seconds to wait for both to accept connections (default 60)
set -euo pipefail

readonly HOST=127.0.0.1
readonly PG_PORT="${WALRELAY_PG_PORT:-5432}"
readonly AMQP_PORT="${WALRELAY_AMQP_PORT:-5672}"
readonly WAIT_SECONDS="${WALRELAY_SERVICES_WAIT:-60}"
# Minimum max_replication_slots and max_wal_senders. walrelay's tests create
# several slots and walsenders at once, and 10 is PostgreSQL's default for both.
readonly MIN_SLOTS=10
readonly COMPOSE_FILE=docker/compose.yaml

# libpq reads these variables, so they are unset to keep psql and pg_isready on
# 127.0.0.1. PGPASSWORD and PGPASSFILE stay usable for a local password.
unset PGHOST PGHOSTADDR PGPORT PGSERVICE PGSERVICEFILE PGDATABASE PGUSER

CHECK_ONLY=false
PG_INSTALLED=false # set when this run installed the postgresql package
APT_UPDATED=false

say() { echo "services: $*"; }
fail() {
	echo "services: error: $*" >&2
	exit 1
}

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

for arg in "$@"; do
	case "$arg" in
	--check) CHECK_ONLY=true ;;
	-h | --help)
		usage
		exit 0
		;;
	*) fail "unknown argument $arg (use --check or --help)" ;;
	esac
done

case "$PG_PORT:$AMQP_PORT:$WAIT_SECONDS" in
*[!0-9:]* | :* | *::* | *:) fail "invalid WALRELAY_PG_PORT=$PG_PORT, WALRELAY_AMQP_PORT=$AMQP_PORT or WALRELAY_SERVICES_WAIT=$WAIT_SECONDS: each must be a whole number" ;;
esac

have() { command -v "$1" >/dev/null 2>&1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# --- probes -----------------------------------------------------------------

# with_timeout runs a command under coreutils timeout when that exists. macOS
# lacks it, and a refused connection to 127.0.0.1 fails at once anyway.
with_timeout() {
	if have timeout; then
		timeout "$@"
	else
		shift
		"$@"
	fi
}

tcp_open() {
	with_timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

pg_ready() {
	have pg_isready && pg_isready -q -h "$HOST" -p "$PG_PORT" -t 2
}

# psql_query runs one query as user postgres over TCP and never prompts for a
# password (-w), so a missing password fails at once instead of hanging.
psql_query() {
	PGCONNECT_TIMEOUT=5 psql -w -X -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -Atc "$1"
}

amqp_port_open() {
	tcp_open "$AMQP_PORT"
}

rabbitmq_node_running() {
	have rabbitmq-diagnostics && with_timeout 20 rabbitmq-diagnostics -q ping >/dev/null 2>&1
}

# --- PostgreSQL cluster lookup (Debian's postgresql-common) ----------------

# cluster_for_port prints "<version> <name>" of the local cluster configured
# for PG_PORT, or nothing when pg_lsclusters is missing or none matches.
cluster_for_port() {
	have pg_lsclusters || return 0
	pg_lsclusters --no-header 2>/dev/null | awk -v port="$PG_PORT" '$3 == port { print $1, $2; exit }'
}

# default_cluster prints "<version> main": the one version under
# /etc/postgresql, or the newest when there are several.
default_cluster() {
	[ -d /etc/postgresql ] || return 0
	local version
	version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)"
	[ -n "$version" ] && echo "$version main"
	return 0
}

# cluster_port prints the port that pg_lsclusters reports for a cluster.
cluster_port() {
	have pg_lsclusters || return 0
	pg_lsclusters --no-header 2>/dev/null | awk -v version="$1" -v name="$2" '$1 == version && $2 == name { print $3; exit }'
}

pg_cluster() {
	local cluster
	cluster="$(cluster_for_port)"
	[ -n "$cluster" ] || cluster="$(default_cluster)"
	echo "$cluster"
}

# --- install ----------------------------------------------------------------

install_instructions() {
	local packages="$1"
	echo "services: install the missing packages ($packages) and run this script again:" >&2
	echo "services:   Debian/Ubuntu: sudo apt-get install -y $packages && sudo bash scripts/services.sh" >&2
	echo "services:   other systems: install PostgreSQL (13 or newer) and RabbitMQ with your package manager" >&2
	if [ -f "$COMPOSE_FILE" ]; then
		echo "services:   or run both in Docker: docker compose -f $COMPOSE_FILE up -d" >&2
	else
		echo "services:   or, once docker/ exists, run both in Docker: docker compose -f $COMPOSE_FILE up -d" >&2
	fi
}

apt_install() {
	if [ "$APT_UPDATED" = false ]; then
		say "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -q
		APT_UPDATED=true
	fi
	say "apt-get install -y $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# ensure_packages installs PostgreSQL and RabbitMQ when a server's port is
# closed and its programs are missing. A server that already listens (in
# Docker, say) needs only the PostgreSQL client programs for the checks.
ensure_packages() {
	local missing=()

	if ! tcp_open "$PG_PORT"; then
		if ! have psql || ! have pg_ctlcluster || ! have pg_isready; then
			missing+=(postgresql)
		fi
	elif ! have psql || ! have pg_isready; then
		missing+=(postgresql-client)
	fi

	if ! amqp_port_open && ! have rabbitmq-server; then
		missing+=(rabbitmq-server)
	fi

	[ "${#missing[@]}" -eq 0 ] && return 0

	if [ "$CHECK_ONLY" = true ]; then
		say "missing packages: ${missing[*]}"
		return 1
	fi

	if [ -f /etc/debian_version ] && is_root && have apt-get; then
		apt_install "${missing[@]}"
		case " ${missing[*]} " in
		*" postgresql "*) PG_INSTALLED=true ;;
		esac
		return 0
	fi

	install_instructions "${missing[*]}"
	exit 1
}

# --- PostgreSQL -------------------------------------------------------------

start_postgres() {
	pg_ready && return 0

	local cluster
	cluster="$(pg_cluster)"
	if [ -z "$cluster" ]; then
		fail "PostgreSQL does not accept connections on $HOST:$PG_PORT and no cluster exists under /etc/postgresql. Create one (pg_createcluster <version> main --start) or start your PostgreSQL on port $PG_PORT"
	fi

	local version name port
	read -r version name <<<"$cluster"
	port="$(cluster_port "$version" "$name")"
	if [ -n "$port" ] && [ "$port" != "$PG_PORT" ]; then
		fail "PostgreSQL cluster $version/$name uses port $port, not $PG_PORT. Set WALRELAY_PG_PORT=$port, or change port in /etc/postgresql/$version/$name/postgresql.conf"
	fi
	if ! is_root; then
		fail "PostgreSQL does not accept connections on $HOST:$PG_PORT. Start it as root: sudo pg_ctlcluster --skip-systemctl-redirect $version $name start"
	fi

	say "starting PostgreSQL $version/$name"
	pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start ||
		fail "could not start PostgreSQL $version/$name; see /var/log/postgresql/postgresql-$version-$name.log"
}

restart_postgres() {
	local version="$1" name="$2"
	say "restarting PostgreSQL $version/$name"
	pg_ctlcluster --skip-systemctl-redirect "$version" "$name" restart
}

# ensure_pg_auth makes user postgres usable over TCP on 127.0.0.1. It edits
# pg_hba.conf only for a cluster that this run installed, because a fresh
# Debian cluster accepts 127.0.0.1 only with a password.
ensure_pg_auth() {
	local output
	if output="$(psql_query 'SELECT 1' 2>&1)"; then
		return 0
	fi

	local cluster hba
	cluster="$(pg_cluster)"
	hba="/etc/postgresql/${cluster% *}/${cluster#* }/pg_hba.conf"

	if [ "$PG_INSTALLED" = true ] && [ -f "$hba" ]; then
		sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
		say "added 'host all all 127.0.0.1/32 trust' at the top of $hba (this run installed the cluster)"
		pg_ctlcluster --skip-systemctl-redirect "${cluster% *}" "${cluster#* }" reload
		psql_query 'SELECT 1' >/dev/null || fail "user postgres still cannot connect to $HOST:$PG_PORT after the pg_hba.conf change"
		return 0
	fi

	echo "services: error: cannot connect to PostgreSQL on $HOST:$PG_PORT as user postgres: $output" >&2
	echo "services: either set PGPASSWORD for user postgres, or allow local connections by adding this line at the top of pg_hba.conf and reloading PostgreSQL:" >&2
	echo "services:   host all all 127.0.0.1/32 trust" >&2
	exit 1
}

# ensure_logical_wal sets wal_level=logical and at least MIN_SLOTS replication
# slots and walsenders with ALTER SYSTEM, then restarts the cluster. It does so
# only as root and for a local cluster that pg_ctlcluster manages. Otherwise it
# prints the commands and exits 1.
ensure_logical_wal() {
	local wal_level slots senders
	wal_level="$(psql_query 'SHOW wal_level')"
	slots="$(psql_query 'SHOW max_replication_slots')"
	senders="$(psql_query 'SHOW max_wal_senders')"

	local changes=()
	[ "$wal_level" = logical ] || changes+=("ALTER SYSTEM SET wal_level = logical")
	[ "$slots" -ge "$MIN_SLOTS" ] || changes+=("ALTER SYSTEM SET max_replication_slots = $MIN_SLOTS")
	[ "$senders" -ge "$MIN_SLOTS" ] || changes+=("ALTER SYSTEM SET max_wal_senders = $MIN_SLOTS")

	if [ "${#changes[@]}" -eq 0 ]; then
		say "PostgreSQL ready on $HOST:$PG_PORT (wal_level=logical, max_replication_slots=$slots, max_wal_senders=$senders)"
		return 0
	fi

	say "PostgreSQL on $HOST:$PG_PORT has wal_level=$wal_level, max_replication_slots=$slots, max_wal_senders=$senders, but walrelay needs wal_level=logical and at least $MIN_SLOTS of each"
	if [ "$CHECK_ONLY" = true ]; then
		return 1
	fi

	local cluster
	cluster="$(cluster_for_port)"
	if ! is_root || [ -z "$cluster" ]; then
		echo "services: error: as root, or by hand, run these as a PostgreSQL superuser and then restart PostgreSQL:" >&2
		local change
		for change in "${changes[@]}"; do
			echo "services:   psql -h $HOST -p $PG_PORT -U postgres -c '$change'" >&2
		done
		if [ -n "$cluster" ]; then
			echo "services:   sudo pg_ctlcluster --skip-systemctl-redirect ${cluster% *} ${cluster#* } restart" >&2
		else
			echo "services:   then restart the PostgreSQL server (in Docker: restart its container)" >&2
		fi
		exit 1
	fi

	local change
	for change in "${changes[@]}"; do
		say "$change"
		psql_query "$change" >/dev/null
	done
	restart_postgres "${cluster% *}" "${cluster#* }"
	wait_for "PostgreSQL on $HOST:$PG_PORT" pg_ready /var/log/postgresql/

	wal_level="$(psql_query 'SHOW wal_level')"
	[ "$wal_level" = logical ] || fail "wal_level is still $wal_level after the restart. Check postgresql.conf and postgresql.auto.conf of cluster $cluster"
	say "PostgreSQL ready on $HOST:$PG_PORT (wal_level=logical after restart)"
}

# --- RabbitMQ ---------------------------------------------------------------

start_rabbitmq() {
	amqp_port_open && return 0

	if rabbitmq_node_running; then
		say "RabbitMQ node is running but port $AMQP_PORT is not open yet, waiting"
		return 0
	fi
	if ! is_root; then
		fail "RabbitMQ does not accept connections on $HOST:$AMQP_PORT. Start it as root: sudo rabbitmq-server -detached"
	fi

	say "starting RabbitMQ (rabbitmq-server -detached)"
	rabbitmq-server -detached
}

# rabbitmq_ready requires the AMQP port to be open and, where the RabbitMQ CLI
# can reach the node, its listeners to pass check_port_connectivity. The CLI
# cannot reach the node for every user (Debian allows only root and rabbitmq),
# and then the open port is the whole check.
rabbitmq_ready() {
	amqp_port_open || return 1
	have rabbitmq-diagnostics || return 0

	if with_timeout 20 rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
		return 0
	fi
	if rabbitmq_node_running; then
		return 1
	fi
	return 0
}

# --- waiting ----------------------------------------------------------------

# wait_for polls a probe once a second for at most WAIT_SECONDS.
wait_for() {
	local what="$1" probe="$2" log_dir="$3"
	local deadline=$((SECONDS + WAIT_SECONDS))
	until "$probe"; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail "timed out after ${WAIT_SECONDS}s waiting for $what to accept connections. See its log in $log_dir"
		fi
		sleep 1
	done
}

# --- main -------------------------------------------------------------------

check() {
	local ready=true

	ensure_packages || ready=false

	if pg_ready; then
		if have psql && psql_query 'SELECT 1' >/dev/null 2>&1; then
			ensure_logical_wal || ready=false
		else
			say "PostgreSQL accepts connections on $HOST:$PG_PORT, but user postgres cannot log in"
			ready=false
		fi
	else
		say "PostgreSQL does not accept connections on $HOST:$PG_PORT"
		ready=false
	fi

	if rabbitmq_ready; then
		say "RabbitMQ ready on $HOST:$AMQP_PORT"
	else
		say "RabbitMQ does not accept connections on $HOST:$AMQP_PORT"
		ready=false
	fi

	if [ "$ready" = true ]; then
		say "all services ready"
		return 0
	fi
	say "not ready: run scripts/services.sh (as root on Debian-like systems) to fix this"
	return 1
}

main() {
	if [ "$CHECK_ONLY" = true ]; then
		check
		return
	fi

	ensure_packages

	start_postgres
	start_rabbitmq

	wait_for "PostgreSQL on $HOST:$PG_PORT" pg_ready /var/log/postgresql/
	ensure_pg_auth
	ensure_logical_wal

	wait_for "RabbitMQ on $HOST:$AMQP_PORT" rabbitmq_ready /var/log/rabbitmq/
	say "RabbitMQ ready on $HOST:$AMQP_PORT"
}

main
