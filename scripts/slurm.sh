#!/usr/bin/env bash
# Make sure a single-node Slurm cluster answers on this host (the one `envbuilder submit --to slurm` tests use).
#
#   scripts/slurm.sh            install slurm + munge when missing, configure, start, wait for the node
#   scripts/slurm.sh --stop     stop slurmd, slurmctld and munged (the ones this script started)
#
# Idempotent: a cluster that already answers (`sinfo` shows this node idle or mixed) is left as it is.
# Root only: it installs Debian packages, writes /etc/slurm/slurm.conf and starts daemons.
# The config is the smallest that runs jobs on a container host: ProctrackType=proctrack/linuxproc and
# TaskPlugin=task/none, because cgroup tracking needs a writable cgroup tree that containers rarely have;
# accounting off (no slurmdbd), so jobs are tracked with squeue and `scontrol show job`.
set -euo pipefail
conf_dir=/etc/slurm
conf=$conf_dir/slurm.conf
log_dir=${ENVBUILDER_SLURM_LOG_DIR:-/var/log/slurm}
state=/var/lib/slurm
host=$(hostname -s)

die() { echo "envbuilder slurm: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  die "run as root (it installs slurm-wlm and munge, and starts their daemons)"
fi

if [ "${1:-}" = "--stop" ]; then
  for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  exit 0
fi

node_ready() {
  # `sinfo -h -n HOST -o %t`: idle, mix, alloc are usable states; down, drain, unk are not (yet).
  local s
  s=$(timeout 5 sinfo -h -n "$host" -o %t 2>/dev/null | head -n 1 || true)
  case "$s" in idle*|mix*|alloc*|comp*) return 0 ;; *) return 1 ;; esac
}

if command -v sinfo >/dev/null 2>&1 && [ -f "$conf" ] && pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null \
   && node_ready; then
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  echo "envbuilder slurm: installing slurmctld, slurmd, slurm-client and munge ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# --- munge: a key, and munged running as the munge user -------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  # 1024 random bytes: what `mungekey --create` writes by default.
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  old_pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
  if [ -n "$old_pid" ]; then kill "$old_pid" 2>/dev/null || true; sleep 0.5; fi
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 1 50); do
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  munge -n | unmunge >/dev/null || die "munged did not start (see /var/log/munge/munged.log)"
fi

# --- slurm.conf for this host ------------------------------------------------------------------------
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# Leave room for the daemons and the engine: slurmd refuses to register a node that has less than it claims.
real_mb=$((mem_mb * 9 / 10))
slurm_user=root
if id slurm >/dev/null 2>&1; then slurm_user=slurm; fi
install -d -m 0755 "$conf_dir" "$log_dir" "$state" "$state/slurmd"
install -d -o "$slurm_user" -m 0755 "$state/slurmctld"
chown "$slurm_user" "$log_dir"
new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by envbuilder's scripts/slurm.sh: a single-node cluster on $host.
ClusterName=envbuilder
SlurmctldHost=$host
SlurmUser=$slurm_user
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Finished jobs stay visible to scontrol for an hour (accounting is off, so nothing else remembers them).
MinJobAge=3600
KillWait=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$state/slurmctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$new_conf" "$conf"; then
  install -m 0644 "$new_conf" "$conf"
  changed=1
fi
rm -f "$new_conf"

# --- the daemons ---------------------------------------------------------------------------------------
if [ "$changed" = 1 ]; then
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  sleep 1
fi
if ! pgrep -x slurmctld >/dev/null; then
  slurmctld -i
fi
for _ in $(seq 1 100); do
  if timeout 5 scontrol ping 2>/dev/null | grep -q UP; then break; fi
  sleep 0.2
done
if ! pgrep -x slurmd >/dev/null; then
  slurmd
fi
for _ in $(seq 1 150); do
  if node_ready; then exit 0; fi
  state_now=$(timeout 5 sinfo -h -n "$host" -o %t 2>/dev/null | head -n 1 || true)
  case "$state_now" in
    down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
echo "envbuilder slurm: the node $host did not become idle within 30 s:" >&2
sinfo -N -l >&2 || true
tail -n 20 "$log_dir/slurmctld.log" "$log_dir/slurmd.log" >&2 || true
exit 1
