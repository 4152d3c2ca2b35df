#!/usr/bin/env bash
# A one-node SLURM cluster for the tests: munge + slurmctld + slurmd, partition `main`, no
# accounting database. Usage: cluster.sh start DIR | cluster.sh stop DIR. Needs root and Debian's
# slurm-wlm and munge (.ci/run installs them). Every file it writes is under DIR, except that
# /etc/slurm/slurm.conf points to DIR/slurm.conf while the cluster runs (srun inside a job reads
# that path, not the submitter's SLURM_CONF); stop removes the link and restores any previous file.
# Clients outside jobs also find the cluster through SLURM_CONF=DIR/slurm.conf.
set -euo pipefail
cmd=$1
dir=$2
conf="$dir/slurm.conf"
case "$cmd" in
start)
  mkdir -p "$dir/spool" "$dir/state"
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null;
      chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    su -s /bin/sh munge -c /usr/sbin/munged
  fi
  host=$(hostname -s)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
  cat > "$conf" <<CONF
ClusterName=pqdtest
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  mkdir -p /etc/slurm
  if [ -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then mv /etc/slurm/slurm.conf "$dir/slurm.conf.orig"; fi
  ln -s "$conf" /etc/slurm/slurm.conf
  export SLURM_CONF="$conf"
  /usr/sbin/slurmctld -f "$conf"
  /usr/sbin/slurmd -f "$conf"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then exit 0; fi
    sleep 1
  done
  echo "SLURM node did not become idle; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  exit 1
  ;;
stop)
  export SLURM_CONF="$conf"
  scancel --user "$(id -un)" 2>/dev/null || true
  for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$conf" ]; then
    rm /etc/slurm/slurm.conf
    if [ -e "$dir/slurm.conf.orig" ]; then mv "$dir/slurm.conf.orig" /etc/slurm/slurm.conf; fi
  fi
  ;;
esac
