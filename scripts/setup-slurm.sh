#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the Slurm executor's tests (tests/it/slurm.rs)
# and for trying `executor: slurm` without a cluster: installs Debian's slurmctld, slurmd and
# munge if missing (as root), writes a private configuration under .deps/slurm/ (it never touches
# /etc/slurm), and starts munged, slurmctld and slurmd unless they already answer. Idempotent.
#
#   ./scripts/setup-slurm.sh           # then: export SLURM_CONF=$PWD/.deps/slurm/slurm.conf
#   ./scripts/setup-slurm.sh --stop    # stops the daemons it started
#
# Prints `slurm: ready (SLURM_CONF=...)` when `sinfo` sees the node idle; exits 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.deps/slurm"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

if [ "${1:-}" = "--stop" ]; then
  for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  echo "slurm: stopped"
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "slurm: installing slurmctld, slurmd, slurm-client and munge from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null
  else
    echo "slurm: slurmctld/slurmd/munge are not installed and this is not root with apt-get;" >&2
    echo "       install Debian's slurm-wlm and munge, then run this again" >&2
    exit 1
  fi
fi

# munge: the package made a key; start the daemon as its own user.
if ! munge -n </dev/null >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  if [ "$(id -u)" = 0 ]; then
    runuser -u munge -- /usr/sbin/munged
  else
    /usr/sbin/munged
  fi
  for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024) - 512}' /proc/meminfo)"
mkdir -p "$DIR/state" "$DIR/spool"
cat > "$CONF.new" <<CONF
# Written by scripts/setup-slurm.sh: a one-node cluster on $HOST for Azimuth's tests.
ClusterName=azimuth
SlurmctldHost=$HOST
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=${AZIMUTH_SLURMCTLD_PORT:-6817}
SlurmdPort=${AZIMUTH_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Jobs that declare no memory get this much per CPU, not the whole node.
DefMemPerCPU=512
ReturnToService=2
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=azimuth Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mv "$CONF.new" "$CONF"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! alive "$DIR/slurmctld.pid"; then
  /usr/sbin/slurmctld -f "$CONF"
fi
if ! alive "$DIR/slurmd.pid"; then
  /usr/sbin/slurmd -f "$CONF"
fi
for _ in $(seq 100); do
  state="$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)"
  case "$state" in
    idle|mixed|allocated) echo "slurm: ready (SLURM_CONF=$CONF)"; exit 0 ;;
  esac
  sleep 0.2
done
echo "slurm: the node did not come up (state: ${state:-none}); logs: $DIR/slurmctld.log, $DIR/slurmd.log" >&2
exit 1
