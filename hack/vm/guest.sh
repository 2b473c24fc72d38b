#!/bin/bash
# Runs inside the hack/vm/run guest as root (started by the image's crius-vm.service, which mounts
# the host's share at /mnt/crius first). Not baked into the image: hack/vm/run copies it into the
# share on every run. Exit code: 0 when every test binary and the service check passed.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -u
share=/mnt/crius
# shellcheck disable=SC1091
. "$share/manifest"
results=$share/results
# The harness's deadlines (tests/common), stretched when the guest is emulated.
export CRIUS_TEST_TIME_SCALE=${TIME_SCALE:-1}
mkdir -p "$results"
: >"$results/summary"
rc=0

log() { echo "crius-vm: $*"; }
record() { # NAME EXIT
    echo "$1 $2" >>"$results/summary"
    [ "$2" = 0 ] || rc=1
}

log "kernel $(uname -r), virt $(systemd-detect-virt 2>/dev/null || echo none)," \
    "/sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup), $(nproc) CPUs," \
    "$(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo)"
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    log "FAIL: the guest is not on the unified cgroup v2 hierarchy"
    record cgroup2-host 1
    exit 1
fi

# Local copies: the tests exec crius many times and 9p is slow; the test binaries have crius'
# host path compiled in.
mkdir -p "$(dirname "$CRIUS_HOST_EXE")" /opt/crius-tests
cp "$share/bin/crius" "$CRIUS_HOST_EXE"
cp "$share"/tests/* /opt/crius-tests/
# Test temp roots live in /tmp: on the guest's disk (overlay needs a real upper filesystem).
cd /opt/crius-tests || exit 1

for entry in $TESTS; do
    name=${entry%%:*}
    args=
    [ "$name" = "$entry" ] || args=$(echo "${entry#*:}" | tr , " ")
    log "== $name $args"
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout --kill-after=10 1200 "./$name" --test-threads="$THREADS" $args \
        >"$results/$name.log" 2>&1
    r=$?
    grep -E '^test |^test result:' "$results/$name.log"
    log "$name: exit $r in $(($(date +%s) - start))s"
    record "$name" "$r"
done

# --- crius as a systemd service, as the README installs it ----------------------------------
service_check() {
    install -m 0755 "$share/bin/crius" /usr/local/bin/crius
    install -m 0644 "$share/crius.service" /etc/systemd/system/crius.service
    systemctl daemon-reload && systemctl enable --now crius || return 1
    local pod pid pid2
    for _ in $(seq 60); do
        crius version >/dev/null 2>&1 && break
        sleep 1
    done
    crius version || return 1
    cat >/tmp/vm-pod.json <<'EOF'
{"metadata": {"name": "vm-service", "namespace": "default", "uid": "vm-service-uid", "attempt": 0},
 "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}}
EOF
    pod=$(crius runp /tmp/vm-pod.json) || return 1
    log "pod $pod running"
    pid=$(crius inspectp "$pod" | jq -r '.info.info.pid // .info.pid // empty')
    if [ -z "$pid" ] || ! kill -0 "$pid"; then
        log "no pause pid for $pod"
        return 1
    fi
    log "pause pid $pid, cgroup $(cat /proc/"$pid"/cgroup)"
    systemctl restart crius || return 1
    for _ in $(seq 60); do
        crius version >/dev/null 2>&1 && break
        sleep 1
    done
    [ "$(crius pods -q --id "$pod" --state ready)" = "$pod" ] ||
        { log "pod $pod not Ready after systemctl restart crius"; crius pods; return 1; }
    pid2=$(crius inspectp "$pod" | jq -r '.info.info.pid // .info.pid // empty')
    if [ "$pid2" != "$pid" ] || ! kill -0 "$pid"; then
        log "pause changed after restart: $pid -> $pid2"
        return 1
    fi
    log "pod $pod survived systemctl restart crius (pause $pid)"
    crius stopp "$pod" && crius rmp "$pod" || return 1
    [ -z "$(crius pods -q)" ] || { log "pods left: $(crius pods)"; return 1; }
    systemctl stop crius
}
if [ "$NO_SERVICE" != 1 ]; then
    log "== crius.service"
    service_check >"$results/service.log" 2>&1
    r=$?
    cat "$results/service.log"
    journalctl -u crius --no-pager >"$results/crius-journal.log" 2>&1
    record crius.service "$r"
fi

log "summary:"
cat "$results/summary"
exit "$rc"
