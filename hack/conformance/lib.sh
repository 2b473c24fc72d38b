# shellcheck shell=bash
# Shared pieces of hack/conformance/critest and hack/conformance/kubelet (sourced, not run):
# a work dir that owns everything a run makes, a cleanup stack run on every exit, the stock
# clients from ../shared/tools, the critest stand-in images in a docker-registry on a free
# 127.0.0.1 port, a CNI bridge network of our own and a crius daemon on its own root, state
# and socket that pulls every upstream registry through that local registry.
#
# Everything a run creates is recorded in $WORK/run.env as it is made, so that the same
# teardown serves the EXIT trap and a later run that finds the leftovers of a killed one.

CONF_MARKER=.crius-conformance        # in every work dir this harness makes
CONF_SUBNET_LOCKS=/tmp/crius-test-nets # shared with tests/common/network.rs
CONF_IMAGE_CACHE=${CONFORMANCE_IMAGE_CACHE:-/var/cache/crius-critest-images}
# The cgroup driver of crius and of the kubelet (cgroupfs or systemd; hack/vm/guest.sh runs the
# kubelet check with systemd on a systemd + cgroup v2 guest).
CONF_CGROUP_DRIVER=${CONFORMANCE_CGROUP_DRIVER:-cgroupfs}
# Stretches every wait of the harness (hack/vm/guest.sh sets it under TCG emulation).
CONF_TIME_SCALE=${CONFORMANCE_TIME_SCALE:-1}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# In CI the shared dir is a sibling of the repository (a fresh clone next to shared/).
SHARED_TOOLS=${CRIUS_SHARED_TOOLS:-$(dirname "$REPO")/shared/tools}

log() { printf '%s [%s] %s\n' "$(date +%T)" "${CONF_NAME:-conformance}" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# ---- cleanup stack -------------------------------------------------------------------------

_conf_cleanups=()
# defer CMD ARGS...: run at exit, last deferred first; failures there are reported, not fatal.
defer() {
    local q
    printf -v q '%q ' "$@"
    _conf_cleanups+=("$q")
}
_conf_run_cleanups() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    for ((i = ${#_conf_cleanups[@]} - 1; i >= 0; i--)); do
        eval "${_conf_cleanups[i]}"
    done
    exit "$rc"
}
conf_traps() {
    trap _conf_run_cleanups EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# ---- work dir and its record -----------------------------------------------------------------

# conf_init NAME: root check, stale leftovers swept, a fresh work dir (WORK) and a short state
# dir (STATE), artifacts dir (ARTIFACTS, kept after the run).
conf_init() {
    CONF_NAME=$1
    [[ $(id -u) -eq 0 ]] || die "must run as root (it starts a CRI runtime)"
    conf_traps
    conf_sweep_stale
    WORK=$(mktemp -d "/tmp/crconf-$CONF_NAME.XXXXXX")
    echo "crius conformance run ($CONF_NAME, pid $$)" >"$WORK/$CONF_MARKER"
    # monitor sockets live under the state dir; crius refused state dirs over 27 bytes
    # (issue 10 item 6), so it stays short unless CONFORMANCE_STATE_BASE says otherwise.
    STATE=$(mktemp -d "${CONFORMANCE_STATE_BASE:-/run}/crc.XXXXXX")
    ARTIFACTS=${CONFORMANCE_ARTIFACTS:-$REPO/target/conformance}/$CONF_NAME
    rm -rf "$ARTIFACTS"
    mkdir -p "$ARTIFACTS"
    conf_record OWNER "$$"
    conf_record STATE "$STATE"
    defer conf_teardown "$WORK"
    # bounded time: past the deadline the run is stopped like Ctrl-C (the EXIT trap cleans up)
    local deadline=${CONFORMANCE_DEADLINE:-20m} me=$$
    (
        trap - EXIT INT
        sleep "$deadline" &
        trap 'kill $! 2>/dev/null; exit 0' TERM
        wait $!
        echo "conformance: $CONF_NAME: deadline of $deadline passed; stopping" >&2
        kill -TERM "$me"
    ) </dev/null >&2 &
    defer kill "$!"
    log "work dir $WORK, state dir $STATE, artifacts $ARTIFACTS"
}

# conf_record KEY VALUE: remember something to undo (appended; later values win).
conf_record() {
    printf '%s=%q\n' "$1" "$2" >>"$WORK/run.env"
}

# A killed earlier run (SIGKILL, power loss) cannot have run its trap: undo what it recorded.
conf_sweep_stale() {
    local m dir owner
    shopt -s nullglob
    for m in /tmp/crconf-*/"$CONF_MARKER"; do
        dir=$(dirname "$m")
        owner=$(sed -n 's/^OWNER=//p' "$dir/run.env" 2>/dev/null | tail -n1)
        if [[ -n $owner ]] && kill -0 "$owner" 2>/dev/null; then
            continue # a run in progress
        fi
        log "removing leftovers of an earlier run: $dir"
        conf_teardown "$dir" || true
    done
    shopt -u nullglob
}

# ---- packages and tools ----------------------------------------------------------------------

# CONFORMANCE_OFFLINE=1: the machine was prepared beforehand (the VM guest has no network).
conf_install_deps() {
    if [[ ${CONFORMANCE_OFFLINE:-0} == 1 ]]; then
        log "CONFORMANCE_OFFLINE=1: not running hack/install-deps"
        return 0
    fi
    "$REPO/hack/install-deps"
}

# scaled SECS: SECS stretched by CONFORMANCE_TIME_SCALE.
scaled() { echo $(($1 * CONF_TIME_SCALE)); }

conf_tools() {
    [[ -x $SHARED_TOOLS/get ]] ||
        die "$SHARED_TOOLS/get not found: the stock clients live in ../shared/tools beside the repository (or set CRIUS_SHARED_TOOLS)"
    local dir
    dir=$("$SHARED_TOOLS/get")
    PATH="$dir:$PATH"
    export PATH
    log "stock clients from $dir: $(kubelet --version 2>/dev/null), crictl and critest v1.32.0"
}

# The crius binary: CRIUS_BIN, else the cargo target dir's CRIUS_PROFILE build (debug by
# default: hack/test has just built it), built when missing.
conf_crius_bin() {
    local profile=${CRIUS_PROFILE:-debug} target=${CARGO_TARGET_DIR:-$REPO/target}
    if [[ -n ${CRIUS_BIN:-} ]]; then
        CRIUS=$CRIUS_BIN
    else
        CRIUS=$target/$profile/crius
        if [[ ! -x $CRIUS ]]; then
            log "building crius ($profile)"
            local flag=()
            [[ $profile == release ]] && flag=(--release)
            (cd "$REPO" && cargo build "${flag[@]}" --bin crius)
        fi
    fi
    [[ -x $CRIUS ]] || die "crius binary $CRIUS not found"
    log "crius binary $CRIUS"
}

# ---- images and the local registry -------------------------------------------------------------

# Build the stand-ins once per content of build.sh and its sources (cached under /var/cache).
conf_images() {
    local build=$SHARED_TOOLS/critest-images/build.sh stamp want
    want=$(cat "$build" "$SHARED_TOOLS"/critest-images/src/* | sha256sum | cut -d' ' -f1)
    stamp=$CONF_IMAGE_CACHE/.built-from
    mkdir -p "$CONF_IMAGE_CACHE"
    (
        flock 9
        if [[ -f $CONF_IMAGE_CACHE/oci/index.json && $(cat "$stamp" 2>/dev/null) == "$want" ]]; then
            exit 0
        fi
        log "building the critest stand-in images into $CONF_IMAGE_CACHE"
        # build.sh fetches Debian's dynamic busybox with `apt-get download busybox` (the package
        # conflicts with busybox-static, so it is only downloaded): that needs apt's package
        # lists, which a fresh machine may not have yet
        if [[ ! -x $CONF_IMAGE_CACHE/bbdyn/bin/busybox && -z $(apt-get download --print-uris busybox 2>/dev/null) ]]; then
            apt-get update -qq
        fi
        rm -f "$stamp"
        WORK=$CONF_IMAGE_CACHE "$build" >"$CONF_IMAGE_CACHE/build.log" 2>&1 ||
            { tail -n 30 "$CONF_IMAGE_CACHE/build.log" >&2; exit 1; }
        echo "$want" >"$stamp"
    ) 9>"$CONF_IMAGE_CACHE.lock" || die "building the stand-in images failed ($CONF_IMAGE_CACHE/build.log)"
}

# free_port: a TCP port on 127.0.0.1 nobody listens on (the caller's bind is the real check).
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 30000))
        if [[ -z $(ss -Htln "sport = :$p") ]]; then
            echo "$p"
            return 0
        fi
    done
    die "no free port"
}

# A docker-registry with its own storage under WORK on a free port: REGISTRY=127.0.0.1:PORT.
conf_registry() {
    local port cfg pid
    mkdir -p "$WORK/registry"
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        cfg=$WORK/registry/config.yml
        cat >"$cfg" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
        docker-registry serve "$cfg" >>"$WORK/registry/registry.log" 2>&1 &
        pid=$!
        conf_record PID "$pid"
        for _ in $(seq 50); do
            if ! kill -0 "$pid" 2>/dev/null; then
                break
            fi
            if curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
                REGISTRY=127.0.0.1:$port
                log "registry on $REGISTRY"
                log "pushing the stand-in images"
                WORK=$CONF_IMAGE_CACHE REG=$REGISTRY "$SHARED_TOOLS/critest-images/push.sh" \
                    >"$WORK/registry/push.log" 2>&1 ||
                    { tail -n 20 "$WORK/registry/push.log" >&2; die "push.sh failed"; }
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
    done
    tail -n 20 "$WORK/registry/registry.log" >&2
    die "docker-registry did not start"
}

# ---- network -----------------------------------------------------------------------------------

# A bridge network of our own (BRIDGE, SUBNET 10.19x.y.0/24, host-local data under WORK), plus
# portmap for critest's host-port specs. Subnets are reserved in the lock dir the integration
# tests use, so a concurrent cargo test never picks the same one.
conf_network() {
    local a b lock hex routes
    hex=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    BRIDGE=crc$hex
    mkdir -p "$CONF_SUBNET_LOCKS" "$WORK/net.d" "$WORK/ipam"
    routes=$(ip -o -4 route show table all)
    for _ in $(seq 200); do
        a=$((190 + RANDOM % 10))
        b=$((RANDOM % 256))
        [[ $routes == *"10.$a.$b."* ]] && continue
        lock=$CONF_SUBNET_LOCKS/10.$a.$b.0
        if (set -o noclobber && echo "$$" >"$lock") 2>/dev/null; then
            conf_record LOCK "$lock"
            SUBNET=10.$a.$b.0/24
            break
        fi
    done
    [[ -n ${SUBNET:-} ]] || die "no free 10.19x.y.0/24 subnet"
    conf_record BRIDGE "$BRIDGE"
    # portmap's top-level chains stay after its last DEL: remove them at the end if we made them
    if ! iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1; then
        conf_record PORTMAP_CHAINS ours
    fi
    cat >"$WORK/net.d/10-crconf.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "crconf-$hex",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$SUBNET" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$WORK/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
    log "CNI network: bridge $BRIDGE, subnet $SUBNET"
}

# ---- the crius daemon ------------------------------------------------------------------------

# A cgroup of the harness's own: the daemon and the monitors it forks stay in it (containers
# move to their pods' cgroups), so the teardown finds every one of them.
conf_harness_cgroup() {
    local base
    if [[ -d /sys/fs/cgroup/pids && $(stat -fc %T /sys/fs/cgroup/pids) == cgroupfs ]]; then
        base=/sys/fs/cgroup/pids
    elif [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
        base=/sys/fs/cgroup
    else
        die "no pids cgroup hierarchy found"
    fi
    HARNESS_CGROUP=$base/crconf-$(basename "$WORK")
    mkdir "$HARNESS_CGROUP"
    conf_record CGROUP "$HARNESS_CGROUP"
}

# Run a command in the harness cgroup, in the background; its pid in BG_PID.
conf_spawn() {
    local log=$1
    shift
    (
        echo "$BASHPID" >"$HARNESS_CGROUP/cgroup.procs"
        exec "$@"
    ) >>"$log" 2>&1 </dev/null &
    BG_PID=$!
    disown "$BG_PID" # its end is ours to check, not bash's to report ("Killed")
    conf_record PID "$BG_PID"
}

# conf_crius [SANDBOX_IMAGE]: write its config (mirrors for every upstream registry critest and
# kubelet pods use) and start it; SOCK is its CRI socket, CRIUS_LOG its log, CRICTL_CONFIG
# crictl's config for it.
conf_crius() {
    local sandbox_image=${CRIUS_SANDBOX_IMAGE:-registry.k8s.io/pause:3.10} host
    SOCK=$WORK/crius.sock
    CRIUS_LOG=$WORK/crius.log
    mkdir -p "$WORK/root"
    {
        echo "# crius conformance run ($CONF_NAME)"
        echo "root = \"$WORK/root\""
        echo "state = \"$STATE\""
        echo "socket = \"$SOCK\""
        echo "sandbox_image = \"$sandbox_image\""
        echo "cgroup_driver = \"$CONF_CGROUP_DRIVER\""
        echo "log_level = \"${CRIUS_LOG_LEVEL:-info}\""
        echo
        echo "[cni]"
        echo "conf_dir = \"$WORK/net.d\""
        echo "bin_dirs = [\"/usr/lib/cni\"]"
        for host in registry.k8s.io gcr.io k8s.gcr.io public.ecr.aws docker.io; do
            echo
            echo "[registry.mirrors.\"$host\"]"
            echo "endpoint = [\"http://$REGISTRY\"]"
        done
    } >"$WORK/crius.toml"
    cat >"$WORK/crictl.yaml" <<EOF
runtime-endpoint: unix://$SOCK
image-endpoint: unix://$SOCK
timeout: 120
EOF
    CRICTL_CONFIG=$WORK/crictl.yaml
    conf_crius_start
    log "sandbox image $sandbox_image"
}

# (Re)start the daemon on the config conf_crius wrote; wait until it answers Version.
conf_crius_start() {
    conf_spawn "$CRIUS_LOG" "$CRIUS" daemon --config "$WORK/crius.toml"
    CRIUS_PID=$BG_PID
    conf_record CRIUS_PID "$CRIUS_PID"
    for _ in $(seq "$(scaled 300)"); do
        kill -0 "$CRIUS_PID" 2>/dev/null || { tail -n 30 "$CRIUS_LOG" >&2; die "crius daemon exited"; }
        if [[ -S $SOCK ]] && cri version >/dev/null 2>&1; then
            log "crius daemon pid $CRIUS_PID on $SOCK"
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$CRIUS_LOG" >&2
    die "crius daemon did not answer Version in $(scaled 30) s"
}

cri() {
    crictl --config "$CRICTL_CONFIG" "$@"
}

# Ids (64 hex) of every pod and container the daemon logged.
crius_ids() {
    grep -oE '\b[0-9a-f]{64}\b' "$1" 2>/dev/null | sort -u || true
}

# Cgroup dirs (any hierarchy) named after an id in daemon log $1, deepest first.
cgroups_named_by() {
    local ids
    ids=$(crius_ids "$1")
    [[ -n $ids ]] || return 0
    find /sys/fs/cgroup -mindepth 2 -maxdepth 9 -type d 2>/dev/null | grep -F -f <(echo "$ids") |
        awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2- || true
}

# ---- leak checks -----------------------------------------------------------------------------

# conf_leaks: print what the daemon left on the node after all its pods were removed through
# CRI: mounts, netns pins, cgroups of the ids it logged, bridge ports, IP allocations.
conf_leaks() {
    awk -v s="$STATE" -v w="$WORK/root" '$5 ~ "^" s "/" || $5 ~ "^" w "/" { print "mount: " $5 }' /proc/self/mountinfo
    if [[ -d $STATE/netns ]]; then
        find "$STATE/netns" -mindepth 1 -maxdepth 1 -printf 'netns pin: %p\n'
    fi
    cgroups_named_by "$CRIUS_LOG" | sed 's/^/cgroup: /'
    if [[ -d /sys/class/net/$BRIDGE/brif ]]; then
        find "/sys/class/net/$BRIDGE/brif" -mindepth 1 -printf 'bridge port: %f\n'
    fi
    find "$WORK/ipam" -type f -regex '.*/[0-9.]+' -printf 'ip allocation: %f\n' 2>/dev/null
    true
}

# ---- teardown --------------------------------------------------------------------------------

# Processes that belong to a run: in its harness cgroup, or naming its dirs in their command
# line or (in another mount namespace) their mount table.
_conf_pids_of() {
    local dir=$1 state=$2 cg=$3 pat self_mnt f pid
    [[ -n $cg && -f $cg/cgroup.procs ]] && cat "$cg/cgroup.procs"
    # patterns in a file, so that grep's own command line does not match them
    pat=$(mktemp)
    basename "$dir" >"$pat"
    [[ -n $state ]] && echo "$state" >>"$pat"
    grep -lsF -f "$pat" /proc/[0-9]*/cmdline | cut -d/ -f3
    self_mnt=$(readlink /proc/self/ns/mnt)
    while IFS= read -r f; do
        pid=$(cut -d/ -f3 <<<"$f")
        [[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) != "$self_mnt" ]] && echo "$pid"
    done < <(grep -lsF "$(basename "$dir")" /proc/[0-9]*/mountinfo)
    rm -f "$pat"
}

_conf_umount_under() {
    local root=$1 m
    [[ -n $root ]] || return 0
    for _ in 1 2 3; do
        mapfile -t mounts < <(awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print length($5) "\t" $5 }' /proc/self/mountinfo | sort -rn | cut -f2-)
        ((${#mounts[@]})) || return 0
        for m in "${mounts[@]}"; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
}

# Remove a cgroup tree in every hierarchy, deepest first (processes must be gone).
_conf_rm_cgroup_tree() {
    local rel=$1 base d
    [[ -n $rel && $rel != / ]] || return 0
    for base in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [[ -d $base$rel ]] || continue
        while IFS= read -r d; do
            rmdir "$d" 2>/dev/null || true
        done < <(find "$base$rel" -depth -type d 2>/dev/null)
    done
}

# conf_teardown DIR: undo everything DIR/run.env recorded (also used on a stale dir).
conf_teardown() {
    local dir=$1 env=$1/run.env key value
    local pids=() locks=() bridges=() state='' cgroup='' crius_pid='' portmap='' kubelet_root='' cgroup_root='' sysctls='' driver=cgroupfs
    [[ -f $dir/$CONF_MARKER ]] || return 0
    if [[ -f $env ]]; then
        while IFS='=' read -r key value; do
            value=$(eval "printf '%s' $value")
            case $key in
            PID) pids+=("$value") ;;
            LOCK) locks+=("$value") ;;
            BRIDGE) bridges+=("$value") ;;
            STATE) state=$value ;;
            CGROUP) cgroup=$value ;;
            CRIUS_PID) crius_pid=$value ;;
            PORTMAP_CHAINS) portmap=$value ;;
            KUBELET_ROOT) kubelet_root=$value ;;
            CGROUP_ROOT) cgroup_root=$value ;;
            SYSCTLS) sysctls=$value ;;
            CGROUP_DRIVER) driver=$value ;;
            esac
        done <"$env"
    fi
    # kubelet first (it would restart what we remove), then the pods through crius itself
    local p
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        p=${pids[i]}
        [[ $p == "$crius_pid" ]] && continue
        kill -TERM "$p" 2>/dev/null || true
    done
    if [[ -n $crius_pid ]] && kill -0 "$crius_pid" 2>/dev/null && [[ -S $dir/crius.sock ]] && command -v crictl >/dev/null; then
        timeout 120 crictl --config "$dir/crictl.yaml" rmp -fa >/dev/null 2>&1 || true
    fi
    [[ -n $crius_pid ]] && kill -TERM "$crius_pid" 2>/dev/null
    sleep 1
    # everything left: the harness cgroup (monitors), pod processes, stragglers
    local cgs=() d kube_cgroups=''
    # kubelet's cgroups: its private cgroupRoot, or kubepods when it ran with cgroupRoot "/"
    # (never the root itself: that would be every process on the host); kubepods.slice with the
    # systemd driver (only "/" is supported there)
    if [[ -n $cgroup_root ]]; then
        kube_cgroups=${cgroup_root#/}
        kube_cgroups=${kube_cgroups%/}
        if [[ -z $kube_cgroups ]]; then
            kube_cgroups=kubepods
            [[ $driver == systemd ]] && kube_cgroups=kubepods.slice
        fi
    fi
    mapfile -t cgs < <(cgroups_named_by "$dir/crius.log")
    for _ in 1 2 3 4 5; do
        mapfile -t left < <({
            _conf_pids_of "$dir" "$state" "$cgroup"
            for d in "${cgs[@]}"; do cat "$d/cgroup.procs" 2>/dev/null; done
            [[ -n $kube_cgroups ]] && find /sys/fs/cgroup/*/"$kube_cgroups" "/sys/fs/cgroup/$kube_cgroups" \
                -name cgroup.procs -exec cat {} + 2>/dev/null
        } | sort -u | grep -vx -e "$$" -e "$BASHPID" || true)
        ((${#left[@]})) || break
        kill -KILL "${left[@]}" 2>/dev/null || true
        sleep 0.3
    done
    _conf_umount_under "$dir"
    _conf_umount_under "$state"
    for d in "${cgs[@]}"; do rmdir "$d" 2>/dev/null || true; done
    if [[ $driver == systemd && -n $kube_cgroups ]]; then
        # systemd owns the slices: stopping kubepods.slice removes every pod slice under it
        systemctl stop "$kube_cgroups" 2>/dev/null || true
    elif [[ -n $kube_cgroups ]]; then
        _conf_rm_cgroup_tree "$kube_cgroups"
    fi
    [[ -n $cgroup ]] && rmdir "$cgroup" 2>/dev/null
    for b in "${bridges[@]}"; do
        [[ -e /sys/class/net/$b ]] && ip link del "$b" 2>/dev/null
    done
    if [[ $portmap == ours ]]; then
        _conf_rm_portmap_chains
    fi
    if [[ -n $sysctls && -f $sysctls ]]; then
        while IFS='=' read -r key value; do
            sysctl -qw "$key=$value" >/dev/null 2>&1 || true
        done <"$sysctls"
    fi
    [[ -n $kubelet_root ]] && _conf_umount_under "$kubelet_root"
    for l in "${locks[@]}"; do rm -f "$l"; done
    [[ -n $state && -d $state ]] && rm -rf --one-file-system "$state"
    rm -rf --one-file-system "$dir" 2>/dev/null || log "warning: could not remove all of $dir"
    return 0
}

# portmap's own chains and the jumps to them (left after the last DEL).
_conf_rm_portmap_chains() {
    local table=nat chain rule
    for chain in PREROUTING OUTPUT POSTROUTING; do
        while IFS= read -r rule; do
            # iptables -S quotes its words (comments) as a shell would read them
            eval "iptables -t $table ${rule/-A/-D}" 2>/dev/null || true
        done < <(iptables -t "$table" -S "$chain" 2>/dev/null | grep -E -- '-j CNI-HOSTPORT-' || true)
    done
    for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
        iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
        iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
}
