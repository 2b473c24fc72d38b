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
wait_daemon() {
    for _ in $(seq 60); do
        crius version >/dev/null 2>&1 && return 0
        sleep 1
    done
    crius version
}
# service_check DRIVER: with that cgroup driver, a pod survives `systemctl restart crius` and
# `systemctl daemon-reload`, and nothing of it is left after stopp/rmp.
service_check() {
    local driver=$1 pod pid pid2 parent unit
    mkdir -p /etc/crius
    printf 'cgroup_driver = "%s"\n' "$driver" >/etc/crius/config.toml
    install -m 0755 "$share/bin/crius" /usr/local/bin/crius
    install -m 0644 "$share/crius.service" /etc/systemd/system/crius.service
    systemctl daemon-reload && systemctl enable crius && systemctl restart crius || return 1
    wait_daemon || return 1
    if [ "$(systemctl show -p Delegate --value crius)" != yes ] ||
        [ "$(systemctl show -p KillMode --value crius)" != process ]; then
        log "crius.service: Delegate/KillMode not as shipped"
        return 1
    fi
    # kubelet's pod cgroup parent: a slice with the systemd driver, a path with cgroupfs.
    if [ "$driver" = systemd ]; then
        parent=kubepods-besteffort-podvmservice.slice
    else
        parent=/kubepods/besteffort/podvmservice
    fi
    cat >/tmp/vm-pod.json <<EOF
{"metadata": {"name": "vm-service", "namespace": "default", "uid": "vm-service-uid", "attempt": 0},
 "linux": {"cgroup_parent": "$parent",
           "security_context": {"namespace_options": {"network": "NODE"}}}}
EOF
    pod=$(crius runp /tmp/vm-pod.json) || return 1
    log "pod $pod running"
    pid=$(crius inspectp "$pod" | jq -r '.info.info.pid // .info.pid // empty')
    if [ -z "$pid" ] || ! kill -0 "$pid"; then
        log "no pause pid for $pod"
        return 1
    fi
    log "pause pid $pid, cgroup $(cat /proc/"$pid"/cgroup)"
    unit=crius-$pod.scope
    if [ "$driver" = systemd ]; then
        grep -q "/$parent/$unit\$" /proc/"$pid"/cgroup ||
            { log "pause not in $unit under $parent"; return 1; }
        [ "$(systemctl is-active "$unit")" = active ] || { log "$unit not active"; return 1; }
    fi
    systemctl restart crius && systemctl daemon-reload || return 1
    wait_daemon || return 1
    [ "$(crius pods -q --id "$pod" --state ready)" = "$pod" ] ||
        { log "pod $pod not Ready after systemctl restart crius"; crius pods; return 1; }
    pid2=$(crius inspectp "$pod" | jq -r '.info.info.pid // .info.pid // empty')
    if [ "$pid2" != "$pid" ] || ! kill -0 "$pid"; then
        log "pause changed after restart: $pid -> $pid2"
        return 1
    fi
    if [ "$driver" = systemd ] && [ "$(systemctl is-active "$unit")" != active ]; then
        log "$unit not active after restart and daemon-reload"
        return 1
    fi
    log "pod $pod survived systemctl restart crius and daemon-reload (pause $pid)"
    crius stopp "$pod" && crius rmp "$pod" || return 1
    [ -z "$(crius pods -q)" ] || { log "pods left: $(crius pods)"; return 1; }
    local left
    if [ "$driver" = systemd ]; then
        if systemctl list-units --all --plain --no-legend 'crius-*' | grep -q "$pod"; then
            log "$unit left: $(systemctl list-units --all --plain --no-legend 'crius-*')"
            return 1
        fi
        # kubelet removes its pod slice; crius must leave it empty.
        left=$(find /sys/fs/cgroup/kubepods.slice -mindepth 3 -type d)
        systemctl stop "$parent" kubepods-besteffort.slice kubepods.slice
    else
        left=$(find "/sys/fs/cgroup$parent" -mindepth 1 -type d 2>/dev/null)
        rmdir "/sys/fs/cgroup$parent" /sys/fs/cgroup/kubepods/besteffort /sys/fs/cgroup/kubepods
    fi
    [ -z "$left" ] || { log "cgroups left under $parent: $left"; return 1; }
    log "nothing of pod $pod left"
    systemctl stop crius
}
if [ "$NO_SERVICE" != 1 ]; then
    for driver in cgroupfs systemd; do
        log "== crius.service ($driver driver)"
        service_check "$driver" >"$results/service-$driver.log" 2>&1
        r=$?
        cat "$results/service-$driver.log"
        journalctl -u crius --no-pager >"$results/crius-journal-$driver.log" 2>&1
        record "crius.service/$driver" "$r"
    done
fi

# --- a stock kubelet (standalone, static pods) with each cgroup driver asked for ---------------
# hack/conformance/kubelet as on the host, offline: images from a registry in the guest.
if [ -n "${KUBELET_DRIVERS:-}" ]; then
    mkdir -p /opt/crius-tools /var/cache/crius-critest-images
    cp "$share"/tools/bin/* /opt/crius-tools/
    cp -r "$share"/images/. /var/cache/crius-critest-images/
    # Waits stretched less than the test harness's: a failing check waits that long.
    kscale=1
    [ "${TIME_SCALE:-1}" -gt 1 ] && kscale=3
    for driver in $KUBELET_DRIVERS; do
        log "== stock kubelet ($driver driver)"
        start=$(date +%s)
        CRIUS_SHARED_TOOLS=$share/tools CONFORMANCE_OFFLINE=1 CONFORMANCE_CGROUP_DRIVER=$driver \
            CONFORMANCE_TIME_SCALE=$kscale CONFORMANCE_DEADLINE=25m CRIUS_BIN=$CRIUS_HOST_EXE \
            CONFORMANCE_ARTIFACTS=$results/kubelet-$driver \
            timeout --kill-after=30 1800 bash "$share/repo/hack/conformance/kubelet" \
            >"$results/kubelet-$driver.log" 2>&1
        r=$?
        grep -E 'ok:|FAIL' "$results/kubelet-$driver.log"
        log "kubelet/$driver: exit $r in $(($(date +%s) - start))s"
        record "kubelet/$driver" "$r"
    done
fi

log "summary:"
cat "$results/summary"
exit "$rc"
