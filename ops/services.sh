#!/usr/bin/env bash
# Make the services the integration tests need available on a Debian machine without Docker:
# PostgreSQL on 127.0.0.1:5432 (user postgres, no password: trust) and RabbitMQ on
# 127.0.0.1:5672 (guest/guest) with the consistent-hash exchange plugin. Idempotent: whatever
# already runs is left alone. When a Docker daemon answers, the tests start their own containers
# and this script does nothing more. S3 needs nothing: the tests run an in-process moto server.
# The fault suite needs the RabbitMQ and PostgreSQL server packages in any case (it starts
# private instances of its own), so those are checked first.
set -euo pipefail

readonly PG_HOST=127.0.0.1
readonly PG_PORT=5432
readonly RABBITMQ_PLUGIN=rabbitmq_consistent_hash_exchange
readonly RABBITMQ_START_SECONDS=90
readonly PG_START_SECONDS=30
readonly RABBITMQ_BIN=/usr/lib/rabbitmq/bin
readonly RABBITMQ_SERVER_BIN=$RABBITMQ_BIN/rabbitmq-server

say() { echo "services: $*"; }
die() { echo "services: ERROR: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@" || die "need root for: $* (run as root or allow sudo without a password)"
    else
        die "need root for: $*"
    fi
}

apt_install() {
    say "installing $* (apt-get)"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" \
        || die "apt-get install $* failed"
}

# --- PostgreSQL -------------------------------------------------------------------------------

pg_version() {
    # The newest installed cluster version, e.g. "15".
    find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1
}

pg_can_connect() {
    # No password, as the tests connect (postgresql://postgres@127.0.0.1:5432/postgres).
    PGCONNECT_TIMEOUT=5 psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -w \
        -Atqc 'SELECT 1' >/dev/null 2>&1
}

ensure_postgres() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_version)" ]; then
        apt_install postgresql
    fi
    local version
    version="$(pg_version)"
    [ -n "$version" ] || die "PostgreSQL is installed but /etc/postgresql has no cluster version"
    if [ ! -d "/etc/postgresql/$version/main" ]; then
        say "creating PostgreSQL cluster $version/main"
        as_root pg_createcluster "$version" main
    fi
    if pg_isready -h "$PG_HOST" -p "$PG_PORT" -q; then
        say "PostgreSQL $version already accepts connections on $PG_HOST:$PG_PORT"
    else
        say "starting PostgreSQL cluster $version/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start \
            || die "pg_ctlcluster $version main start failed; see /var/log/postgresql/"
        wait_for "PostgreSQL on $PG_HOST:$PG_PORT" "$PG_START_SECONDS" \
            pg_isready -h "$PG_HOST" -p "$PG_PORT" -q
    fi
    ensure_postgres_login "$version"
}

ensure_postgres_login() {
    local version=$1
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! pg_can_connect; then
        say "allowing the postgres user to log in from localhost without a password ($hba)"
        # Inserted at the top: pg_hba.conf takes the first matching line. A test machine only.
        as_root sed -i '1i host all postgres ::1/128 trust' "$hba"
        as_root sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        wait_for "PostgreSQL to accept the login of postgres" 10 pg_can_connect
    fi
    say "PostgreSQL login as postgres from $PG_HOST works"
}

# --- RabbitMQ ---------------------------------------------------------------------------------

rabbitmq_answers() {
    as_root timeout 15 rabbitmq-diagnostics -q ping >/dev/null 2>&1
}

amqp_port_open() {
    timeout 5 bash -c ': </dev/tcp/127.0.0.1/5672' 2>/dev/null
}

ensure_rabbitmq() {
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt_install rabbitmq-server
    fi
    if rabbitmq_answers; then
        say "RabbitMQ already answers"
    else
        say "starting RabbitMQ (rabbitmq-server -detached)"
        as_root rabbitmq-server -detached || die "rabbitmq-server -detached failed"
        wait_for "RabbitMQ to answer a ping" "$RABBITMQ_START_SECONDS" rabbitmq_answers
    fi
    say "enabling the RabbitMQ plugin $RABBITMQ_PLUGIN"
    as_root rabbitmq-plugins enable "$RABBITMQ_PLUGIN" >/dev/null \
        || die "rabbitmq-plugins enable $RABBITMQ_PLUGIN failed"
    wait_for "RabbitMQ to accept AMQP connections on 127.0.0.1:5672" \
        "$RABBITMQ_START_SECONDS" amqp_port_open
    say "RabbitMQ accepts AMQP connections on 127.0.0.1:5672"
}

# --- the fault suite's private services -----------------------------------------------------

ensure_fault_suite_tools() {
    # tests/faults/test_fault_suite.py restarts its dependencies, so it starts a RabbitMQ node
    # and a PostgreSQL cluster of its own from the server packages (never the services above),
    # with or without Docker. It needs the packages only, no running service.
    if [ ! -x "$RABBITMQ_SERVER_BIN" ]; then
        apt_install rabbitmq-server
    fi
    if ! command -v pg_createcluster >/dev/null 2>&1 || [ -z "$(pg_version)" ]; then
        apt_install postgresql
    fi
    local version
    version="$("$RABBITMQ_BIN/rabbitmqctl" version 2>/dev/null || true)"
    case "$version" in
        3.10.*) ;;
        # Not fatal here: the other tiers do not care; the fault suite fails with this reason.
        *) say "WARNING: the fault suite expects RabbitMQ 3.10.x; rabbitmqctl version says" \
               "'${version:-nothing}'" ;;
    esac
    if [ "$(id -u)" -ne 0 ]; then
        say "WARNING: the fault suite runs pg_createcluster and a RabbitMQ node; run as root"
    fi
    say "fault suite: $RABBITMQ_SERVER_BIN (RabbitMQ ${version:-?})," \
        "pg_createcluster (PostgreSQL $(pg_version))"
}

# --- helpers ----------------------------------------------------------------------------------

wait_for() {
    # wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND once a second until it succeeds.
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "gave up waiting ${seconds}s for $what"
        fi
        sleep 1
    done
}

main() {
    ensure_fault_suite_tools
    if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
        say "a Docker daemon answers: the tests start their own containers (testcontainers)"
        return
    fi
    ensure_postgres
    ensure_rabbitmq
    say "ready: postgresql://postgres@$PG_HOST:$PG_PORT/postgres," \
        "amqp://guest:guest@127.0.0.1:5672/"
}

main "$@"
