#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the cluster tests (tests/cluster/):
#   bash tests/cluster/start-slurm.sh          start it (nothing to do if it is already up)
#   bash tests/cluster/start-slurm.sh stop     stop the daemons it started
# This machine is controller and compute node, with its real CPU count and memory. Jobs are
# tracked without cgroups and there is no accounting database, so the script needs no
# systemd. It runs as root: it installs Debian's slurm-wlm and munge packages when they are
# missing and writes /etc/slurm/slurm.conf (never over a configuration it did not write).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# Single-node test cluster written by tests/cluster/start-slurm.sh of trialflow."
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
LOGS=/var/log/slurm
STATE=/var/lib/slurm
NAME=$(basename "$0")
CONF_CHANGED=no
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

fail() {
  echo "$NAME: FAILED: $1" >&2
  shift
  for detail in "$@"; do echo "$detail" >&2; done
  exit 1
}

# Runs a command; on failure names it and shows what it printed.
run() {
  if ! "$@" >"$WORK/out" 2>&1; then
    fail "$*" "$(cat "$WORK/out")"
  fi
}

alive() {  # alive PIDFILE: the process the file names is running
  local pid
  pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A zombie has exited already; only its parent has not collected it.
  [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sinfo >/dev/null && command -v munged >/dev/null; then
    return
  fi
  echo "== installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  run apt-get update -qq
  run apt-get install -y -qq --no-install-recommends slurm-wlm munge
}

start_munge() {
  if [ ! -s "$MUNGE_KEY" ]; then
    run mungekey --create --keyfile="$MUNGE_KEY"
  fi
  run chown munge:munge "$MUNGE_KEY"
  run chmod 0400 "$MUNGE_KEY"
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "munged: already running"
    return
  fi
  run install -d -o munge -g munge -m 0755 /run/munge
  run install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  run runuser -u munge -- /usr/sbin/munged
  run sh -c 'munge -n | unmunge'
  echo "munged: started"
}

# The node line as slurmd detects this machine (CPUs, sockets, cores, threads, memory).
node_line() {
  local detected
  detected=$(slurmd -C 2>"$WORK/err" | head -n 1) || true
  case "$detected" in
    NodeName=*) echo "$detected NodeAddr=127.0.0.1 State=UNKNOWN" ;;
    *) fail "slurmd -C (detecting this machine's CPUs and memory)" "$(cat "$WORK/err")" ;;
  esac
}

# Writes the configuration unless it is current; CONF_CHANGED says whether it did.
write_conf() {
  local host node
  host=$(hostname -s)
  node=$(node_line) || exit 1
  # SlurmUser=root: the daemons keep their state in root-owned folders and jobs run as the
  # submitting user, which is all a throwaway test cluster needs. CR_CPU_Memory hands out
  # logical CPUs one by one, so a job asking for one CPU gets one, hyperthreads or not.
  # MinJobAge keeps finished jobs visible to squeue for an hour: without an accounting
  # database, squeue is how Snakemake learns that a job has finished.
  cat >"$WORK/slurm.conf" <<EOF
$MARK
ClusterName=trialflow
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MinJobAge=3600
$node
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -f "$CONF" ] && ! head -n 1 "$CONF" | grep -qxF "$MARK"; then
    fail "writing $CONF" "$CONF exists and was not written by this script;" \
      "this machine already has a SLURM configuration: run the tests against that cluster."
  fi
  if [ -f "$CONF" ] && cmp -s "$WORK/slurm.conf" "$CONF"; then
    return
  fi
  CONF_CHANGED=yes
  run install -d -m 0755 /etc/slurm "$LOGS" "$STATE/slurmctld" "$STATE/slurmd"
  run cp "$WORK/slurm.conf" "$CONF"
  echo "wrote $CONF"
}

stop_daemons() {
  local pidfile
  for pidfile in "$SLURMD_PID" "$CTLD_PID" "$@"; do
    if alive "$pidfile"; then
      kill "$(cat "$pidfile")"
      for _ in $(seq 50); do alive "$pidfile" || break; sleep 0.2; done
      echo "stopped $(basename "$pidfile" .pid)"
    fi
  done
}

start_slurm() {
  if alive "$CTLD_PID"; then
    echo "slurmctld: already running"
  else
    run slurmctld
    echo "slurmctld: started"
  fi
  if alive "$SLURMD_PID"; then
    echo "slurmd: already running"
  else
    run slurmd
    echo "slurmd: started"
  fi
}

wait_until_idle() {
  local state=""
  for _ in $(seq 60); do
    state=$(sinfo --noheader --Node --format=%T 2>"$WORK/err" | head -n 1) || true
    case "$state" in
      idle | mixed | allocated) echo "node $(hostname -s): $state"; return ;;
    esac
    sleep 1
  done
  fail "sinfo --noheader --Node --format=%T (the node is '${state:-not listed}' after 60 s)" \
    "$(cat "$WORK/err")" "$(sinfo --list-reasons 2>&1 || true)" \
    "--- $LOGS/slurmctld.log:" "$(tail -n 15 "$LOGS/slurmctld.log" 2>&1 || true)" \
    "--- $LOGS/slurmd.log:" "$(tail -n 15 "$LOGS/slurmd.log" 2>&1 || true)"
}

main() {
  if [ "$(id -u)" -ne 0 ]; then
    fail "id -u" "$NAME must run as root (it installs packages and starts system daemons)."
  fi
  case "${1:-start}" in
    stop)
      stop_daemons "$MUNGE_PID"
      ;;
    start)
      install_packages
      start_munge
      write_conf
      # Daemons that run on an older configuration are restarted to read the new one.
      if [ "$CONF_CHANGED" = yes ]; then stop_daemons; fi
      start_slurm
      wait_until_idle
      ;;
    *)
      fail "$NAME $1" "usage: bash $0 [start|stop]"
      ;;
  esac
}

main "$@"
