#!/usr/bin/env bash
# s3.sh — a real S3 server for the S3 backend's tests and benchmark: a throw-away,
# single-node Ceph cluster (1 ceph-mon, 1 memstore ceph-osd, radosgw with the beast
# frontend) on 127.0.0.1, from Debian's packages, as root, without Docker or systemd.
#
#   s3.sh start STATEDIR   start (or reuse) the cluster under STATEDIR/ceph, create the
#                          test bucket, write STATEDIR/s3.env (KEY=VALUE lines)
#   s3.sh stop STATEDIR    stop exactly the daemons recorded under STATEDIR/ceph
#   s3.sh gc STATEDIR      collect deleted objects' data now rather than a minute or two
#                          later (frees the OSD's RAM; the benchmark runs it between rounds
#                          so that no collection runs during a measurement)
#
# Ports: the gateway and the monitor each get a free port on 127.0.0.1, so several
# clusters (and other services) can run side by side. memstore keeps every object in the
# OSD's RAM (about 2x the bytes stored until garbage collection, set here to 60 s), and
# every cold start is an empty cluster: keep test data moderate.
#
# Quirks of this server (Ceph 16 "Pacific") that clients must respect:
# - path-style addressing and 127.0.0.1 (no virtual-host DNS, no IPv6 listener);
# - it rejects the streamed uploads with trailing CRC32 checksums that AWS SDKs send by
#   default (HTTP 411 MissingContentLength): checksums only "when required";
# - radosgw needs ms_mon_client_mode = crc when cephx is off, or it retries for 5 minutes;
# - CompleteMultipartUpload returns an empty ETag; a HEAD afterwards returns the real one.
#
# Tunables (environment): S3_ACCESS_KEY, S3_SECRET_KEY, S3_TEST_BUCKET, START_TIMEOUT
# (seconds per stage, default 90), STOP_GRACE (seconds after SIGTERM, default 10).
set -euo pipefail

cmd=${1:-}
STATEDIR=${2:-}
if [ -z "$cmd" ] || [ -z "$STATEDIR" ]; then
  echo "usage: $0 start|stop|gc STATEDIR" >&2
  exit 2
fi
mkdir -p "$STATEDIR"
STATEDIR=$(cd "$STATEDIR" && pwd)
C=$STATEDIR/ceph                     # everything the cluster owns lives here
ENV_FILE=$STATEDIR/s3.env
ACCESS_KEY=${S3_ACCESS_KEY:-TESTACCESSKEY0000000}
SECRET_KEY=${S3_SECRET_KEY:-testsecretkey0000000000000000000000000000}
BUCKET=${S3_TEST_BUCKET:-bitfog-test}
TIMEOUT=${START_TIMEOUT:-90}
GRACE=${STOP_GRACE:-10}
RGW_NAME=client.rgw.test             # radosgw's ceph entity name (-n)

t_start=$EPOCHREALTIME
log() { printf '[s3 %6.1fs] %s\n' "$(awk -v a="$EPOCHREALTIME" -v b="$t_start" 'BEGIN{print a-b}')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# alive = /proc entry exists and is not a zombie
alive() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# pid from a pid file, only if that process is alive
live_pid() {
  local f=$1 pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  echo "$pid"
}

# stop_one PIDFILE PROGRAM: SIGTERM, then SIGKILL after the grace period; only a pid that
# still runs PROGRAM with this cluster's ceph.conf (a reused pid is left alone).
stop_one() {
  local f=$1 prog=$2 pid cmdline i
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! alive "$pid"; then rm -f "$f"; return 0; fi
  cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)
  if [[ "$cmdline" != *"$prog"* || "$cmdline" != *"$C/ceph.conf"* ]]; then
    log "$prog: pid $pid is no longer ours; leaving it alone"; rm -f "$f"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < GRACE * 10; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "$prog (pid $pid) still running after ${GRACE}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$f"
}

stop_cluster() {
  [ -d "$C/run" ] || return 0
  stop_one "$C/run/$RGW_NAME.pid" radosgw
  stop_one "$C/run/osd.0.pid" ceph-osd       # before the mon: the OSD says goodbye to it
  stop_one "$C/run/mon.a.pid" ceph-mon
}

if [ "$cmd" = stop ]; then
  stop_cluster
  rm -f "$ENV_FILE"
  log "stopped"
  exit 0
fi
if [ "$cmd" = gc ]; then
  [ -f "$C/ceph.conf" ] || die "no cluster under $C"
  timeout 120 radosgw-admin -c "$C/ceph.conf" gc process --include-all 2>>"$C/log/radosgw-admin.log" \
    || die "radosgw-admin gc process failed (see $C/log/radosgw-admin.log)"
  exit 0
fi
[ "$cmd" = start ] || die "unknown command '$cmd' (start|stop|gc)"

ceph_() { timeout 30 ceph -c "$C/ceph.conf" --connect-timeout 20 "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND... : poll COMMAND every 0.2 s until it succeeds
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what (logs: $C/log)"
    sleep 0.2
  done
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

# A free port (and, with 2, the one after it too) in the dynamic range.
free_port() {
  local n=${1:-1} p i
  for ((i = 0; i < 200; i++)); do
    p=$(( 20000 + RANDOM % 30000 ))
    port_free "$p" || continue
    [ "$n" = 1 ] || port_free $((p + 1)) || continue
    echo "$p"; return 0
  done
  die "no free port found"
}

write_env() {
  local endpoint=$1
  cat > "$ENV_FILE.tmp" <<EOF
S3_ENDPOINT=$endpoint
S3_TEST_BUCKET=$BUCKET
AWS_ACCESS_KEY_ID=$ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$SECRET_KEY
AWS_REGION=us-east-1
AWS_REQUEST_CHECKSUM_CALCULATION=when_required
AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# Creates the test bucket (signed with SigV4 by curl); an existing one of ours is fine.
create_bucket() {
  local endpoint=$1 status
  # curl signs only the headers it sends; S3 also wants the payload hash (of the empty body).
  status=$(curl -sS -o "$C/log/create-bucket.xml" -w '%{http_code}' --max-time 30 -X PUT \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" "$endpoint/$BUCKET")
  case $status in
    200|409) ;;
    *) die "creating bucket $BUCKET failed with HTTP $status (see $C/log/create-bucket.xml)" ;;
  esac
}

# ---------------------------------------------------------------- packages
need_pkgs=()
for b in ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw radosgw-admin:radosgw \
         ceph:ceph-common monmaptool:ceph-common curl:curl uuidgen:uuid-runtime ss:iproute2; do
  command -v "${b%%:*}" >/dev/null 2>&1 || need_pkgs+=("${b#*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing packages (need root to install): ${need_pkgs[*]}"
  need_pkgs=($(printf "%s\n" "${need_pkgs[@]}" | sort -u))
  log "installing packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# ---------------------------------------------------------------- already up?
if [ -s "$C/endpoint" ] && live_pid "$C/run/mon.a.pid" >/dev/null && live_pid "$C/run/osd.0.pid" >/dev/null \
   && live_pid "$C/run/$RGW_NAME.pid" >/dev/null && curl -fsS -o /dev/null --max-time 5 "$(cat "$C/endpoint")/"; then
  ENDPOINT=$(cat "$C/endpoint")
  log "already running on $ENDPOINT"
  create_bucket "$ENDPOINT"
  write_env "$ENDPOINT"
  exit 0
fi
# Partially running (a daemon crashed): stop what is left, then rebuild from scratch.
stop_cluster

RGW_PORT=$(free_port)
MON_PORT=$(free_port 2)
MON_PORT_V1=$((MON_PORT + 1))
ENDPOINT=http://127.0.0.1:$RGW_PORT

# ---------------------------------------------------------------- config
rm -rf "$C"
mkdir -p "$C"/{mon,osd,run,log,rgw}
FSID=$(uuidgen)
MON_ADDRS="[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_PORT_V1]"

cat > "$C/ceph.conf" <<EOF
# A private, single-node test cluster (written by test/services/s3.sh).
[global]
fsid = $FSID
mon_host = $MON_ADDRS
# every daemon on loopback only
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
# No cephx: nothing but this machine can reach these loopback ports anyway.
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
# radosgw defaults ms_mon_client_mode to "secure", which needs cephx; without
# this it loops on "get_initial_auth_request returned -13" for 5 minutes.
ms_mon_client_mode = crc
# keep every file of the cluster under $C
run_dir = $C/run
admin_socket = $C/run/\$cluster-\$name.asok
pid_file = $C/run/\$name.pid
log_file = $C/log/\$name.log
# one copy of everything, few PGs (no mgr => no pg autoscaler)
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
# commit mon map changes (pool creation) faster than the 1 s default
paxos_propose_interval = 0.1

[mon]
mon_data = $C/mon/\$cluster-\$id

[osd]
osd_data = $C/osd/\$cluster-\$id
osd_objectstore = memstore
# capacity memstore reports; its RAM grows ~2x the bytes stored (until GC)
memstore_device_bytes = $((16 << 30))
osd_memory_target = $((1 << 30))
osd_fast_shutdown = true

[$RGW_NAME]
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw_data = $C/rgw
# deleted objects' data is garbage-collected after 2 h by default; memstore keeps it in RAM
rgw_gc_obj_min_wait = 60
rgw_gc_processor_period = 60
rgw_thread_pool_size = 128
EOF

# ---------------------------------------------------------------- monitor
log "creating mon on 127.0.0.1:$MON_PORT"
monmaptool --create --fsid "$FSID" --addv a "$MON_ADDRS" "$C/monmap" >/dev/null
ceph-mon -c "$C/ceph.conf" --mkfs -i a --monmap "$C/monmap" --keyring /dev/null
ceph-mon -c "$C/ceph.conf" -i a                     # daemonizes, writes run/mon.a.pid
wait_for "$TIMEOUT" "ceph-mon quorum" ceph_ mon stat

# ---------------------------------------------------------------- OSD
OSD_UUID=$(uuidgen)
OSD_ID=$(ceph_ osd new "$OSD_UUID")
[ "$OSD_ID" = 0 ] || die "expected osd id 0, got '$OSD_ID'"
mkdir -p "$C/osd/ceph-0"
ceph-osd -c "$C/ceph.conf" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$C/log/osd.0.mkfs.log" 2>&1 \
  || { cat "$C/log/osd.0.mkfs.log" >&2; die "ceph-osd --mkfs failed"; }
ceph-osd -c "$C/ceph.conf" -i 0 2>>"$C/log/osd.0.stderr.log"   # daemonizes, run/osd.0.pid

# Create radosgw's pools while the OSD boots, with one `ceph` process fed commands on
# stdin (each `ceph` run is a slow Python start-up); radosgw would otherwise create them
# one at a time.
POOLS=".rgw.root default.rgw.log default.rgw.control default.rgw.meta
       default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec"
for p in $POOLS; do
  echo "osd pool create $p 8 8"
  echo "osd pool application enable $p rgw"
done | ceph_ >"$C/log/pool-create.log" 2>&1 || die "pool creation failed (see $C/log/pool-create.log)"
osd_up() { ceph_ osd dump 2>/dev/null | grep -q '^osd.0 up'; }
wait_for "$TIMEOUT" "osd.0 up" osd_up
log "osd up"

# ---------------------------------------------------------------- radosgw
radosgw -c "$C/ceph.conf" -n "$RGW_NAME" 2>>"$C/log/radosgw.stderr.log"   # daemonizes
wait_for "$TIMEOUT" "radosgw on $ENDPOINT" curl -fsS -o /dev/null --max-time 2 "$ENDPOINT/"
echo "$ENDPOINT" > "$C/endpoint"

# ---------------------------------------------------------------- S3 user and bucket
radosgw-admin -c "$C/ceph.conf" user create --uid=test --display-name=test \
  --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >"$C/log/user-create.json" 2>>"$C/log/radosgw-admin.log" \
  || die "radosgw-admin user create failed (see $C/log/radosgw-admin.log)"
create_bucket "$ENDPOINT"
write_env "$ENDPOINT"
log "S3 ready on $ENDPOINT, bucket $BUCKET"
