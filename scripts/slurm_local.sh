#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the integration tests (pytest -m slurm)
# and for trying `python launch.py -m hydra/launcher=slurm ...` without a cluster.
#
#   scripts/slurm_local.sh up      install if missing, configure, start, wait until usable
#   scripts/slurm_local.sh status  daemons, sinfo, whether sacct answers
#   scripts/slurm_local.sh down    stop the daemons this script starts (by pid file)
#
# Debian/Ubuntu, root, no systemd needed. `up` is idempotent: running daemons are left alone,
# config files are only rewritten when their content changes (then the daemons are restarted).
# Accounting goes through slurmdbd to a local MariaDB because submitit reads job states ONLY via
# `sacct`: without it a job that dies without a result (scancel, time limit, OOM) leaves the
# launcher waiting forever. Facts behind each setting: ../shared/notes/local-slurm.md.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
ETC=/etc/slurm
RUN=/run/slurm
LOG=/var/log/slurm
CLUSTER=localcluster
DB=slurm_acct_db
DB_USER=slurm
NODE=$(hostname -s)

say() { echo "[slurm_local] $*"; }
die() { echo "[slurm_local] ERROR: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (installs packages and starts daemons)"

# ---------------------------------------------------------------------------------------------
# daemons: name, expected /proc/<pid>/comm, pid file
declare -A PIDFILE=(
  [munged]=/run/munge/munged.pid
  [mariadbd]=/run/mysqld/mysqld.pid
  [slurmdbd]=$RUN/slurmdbd.pid
  [slurmctld]=$RUN/slurmctld.pid
  [slurmd]=$RUN/slurmd.pid
)
START_ORDER=(munged mariadbd slurmdbd slurmctld slurmd)
STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)

# Prints the pid if the pid file names a live process whose comm is the daemon (pid files survive
# restarts of the machine here and can point at unrelated processes).
running_pid() {
  local name=$1 f=${PIDFILE[$1]} pid comm
  [[ -s $f ]] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [[ -n $pid && -r /proc/$pid/comm ]] || return 1
  comm=$(cat "/proc/$pid/comm")
  # mariadbd may show up as mysqld on older packagings
  [[ $comm == "$name" || ($name == mariadbd && $comm == mysqld) ]] || return 1
  echo "$pid"
}

stop_daemon() {
  local name=$1 pid i
  if ! pid=$(running_pid "$name"); then
    say "$name: not running"
    rm -f "${PIDFILE[$name]}"
    return 0
  fi
  say "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  if [[ -d /proc/$pid ]]; then
    say "$name: still alive after 10 s, sending SIGKILL to pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "${PIDFILE[$name]}"
}

# ---------------------------------------------------------------------------------------------
install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "packages: all present (${PACKAGES[*]})"
    return
  fi
  say "packages: installing ${missing[*]} (apt-get --no-install-recommends)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/slurm_local.apt.log 2>&1; then
    say "packages: install failed, running apt-get update and retrying"
    apt-get update -q >>/tmp/slurm_local.apt.log 2>&1
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/slurm_local.apt.log 2>&1 \
      || die "apt-get install failed, see /tmp/slurm_local.apt.log"
  fi
}

# Writes $2 to $1 only if different; returns 0 if the file changed.
write_if_changed() {
  local path=$1 content=$2 mode=${3:-0644}
  if [[ -f $path ]] && [[ "$(cat "$path")" == "$content" ]]; then
    return 1
  fi
  printf '%s\n' "$content" >"$path"
  chmod "$mode" "$path"
  say "wrote $path"
  return 0
}

CHANGED=0

configure() {
  mkdir -p "$ETC" "$RUN" "$LOG" /var/spool/slurmctld /var/spool/slurmd /run/munge /run/mysqld
  chown munge:munge /run/munge
  chown mysql:mysql /run/mysqld

  if [[ ! -s /etc/munge/munge.key ]]; then
    say "munge: creating /etc/munge/munge.key"
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi

  # Hardware as slurmd sees it (CPUs, Boards, Sockets, Cores, Threads, RealMemory); the node is
  # declared with that topology, RealMemory a little below the detected value (slurmd drains a
  # node that reports less memory than configured).
  local hw cpus_topo realmem
  hw=$(slurmd -C | head -1)
  cpus_topo=$(tr ' ' '\n' <<<"$hw" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
  realmem=$(tr ' ' '\n' <<<"$hw" | sed -n 's/^RealMemory=//p')
  realmem=$((realmem * 95 / 100))
  local cpus
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$cpus_topo")
  local defmem=$((realmem / cpus))
  say "node $NODE: ${cpus_topo}RealMemory=$realmem (DefMemPerCPU=$defmem)"

  local slurm_conf
  slurm_conf=$(cat <<EOF
# Written by scripts/slurm_local.sh: a single-node test cluster. Edits are overwritten by 'up'.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
# No cgroups in containers: track processes by parent pid, no task confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# Cores and memory are consumable, so jobs share the node; without DefMemPerCPU a job without
# --mem would take all memory and jobs would run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
# Round trip ~1 s instead of ~3 s.
SchedulerParameters=batch_sched_delay=0
SchedulerType=sched/backfill
# submitit jobs ignore SIGTERM; SIGKILL follows after KillWait seconds (default 30).
KillWait=5
# Finished jobs stay visible in squeue/scontrol for an hour.
MinJobAge=3600
MailProg=/bin/true
# submitit requeues preempted/timed-out jobs itself with 'scontrol requeue'.
JobRequeue=1
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# Real accounting, so sacct (and therefore submitit) sees every job state.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
# Keep each job's --comment in sacct: the launcher writes the stage and afterok dependency there.
AccountingStoreFlags=job_comment
NodeName=$NODE NodeAddr=127.0.0.1 ${cpus_topo}RealMemory=$realmem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
  write_if_changed "$ETC/slurm.conf" "$slurm_conf" && CHANGED=1 || true

  # The database password is generated once and kept in slurmdbd.conf (mode 0600).
  local pass=""
  [[ -f $ETC/slurmdbd.conf ]] && pass=$(sed -n 's/^StoragePass=//p' "$ETC/slurmdbd.conf")
  [[ -n $pass ]] || pass=$(head -c 32 /dev/urandom | md5sum | cut -c1-24)
  local dbd_conf
  dbd_conf=$(cat <<EOF
# Written by scripts/slurm_local.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageLoc=$DB
StorageUser=$DB_USER
StoragePass=$pass
EOF
)
  write_if_changed "$ETC/slurmdbd.conf" "$dbd_conf" 0600 && CHANGED=1 || true
  DB_PASS=$pass
}

start_detached() {  # stdio to /dev/null so this script (and its caller's pipes) return
  setsid "$@" </dev/null >/dev/null 2>&1 &
}

wait_for() {  # wait_for <seconds> <description> <command...>
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "timed out after ${secs}s waiting for: $what"
}

start_all() {
  local pid
  if [[ $CHANGED == 1 ]]; then
    for d in slurmd slurmctld slurmdbd; do
      if running_pid "$d" >/dev/null; then
        say "config changed: restarting $d"
        stop_daemon "$d"
      fi
    done
  fi

  if pid=$(running_pid munged); then say "munged: running (pid $pid)"; else
    say "munged: starting"
    start_detached runuser -u munge -- /usr/sbin/munged
    wait_for 15 "munged" bash -c 'munge -n | unmunge'
  fi

  if pid=$(running_pid mariadbd); then say "mariadbd: running (pid $pid)"; else
    if [[ ! -d /var/lib/mysql/mysql ]]; then
      say "mariadb: initialising /var/lib/mysql"
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null 2>&1
    fi
    say "mariadbd: starting"
    start_detached /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql \
      --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid \
      --bind-address=127.0.0.1 --skip-log-error
    wait_for 60 "mariadbd" mariadb -e 'select 1'
  fi
  # Idempotent database + user (root connects through the unix socket).
  mariadb <<EOF
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF

  if pid=$(running_pid slurmdbd); then say "slurmdbd: running (pid $pid)"; else
    say "slurmdbd: starting"
    start_detached /usr/sbin/slurmdbd
    wait_for 60 "slurmdbd (sacctmgr answers)" sacctmgr -n -i list cluster
  fi

  if pid=$(running_pid slurmctld); then say "slurmctld: running (pid $pid)"; else
    say "slurmctld: starting"
    start_detached /usr/sbin/slurmctld
    wait_for 60 "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q UP'
  fi

  if pid=$(running_pid slurmd); then say "slurmd: running (pid $pid)"; else
    say "slurmd: starting as node $NODE"
    start_detached /usr/sbin/slurmd -N "$NODE"
  fi

  # A node left DOWN/DRAIN by an earlier unclean stop is resumed.
  local state
  for i in $(seq 1 150); do
    state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1 || true)
    case $state in
      idle|mixed|allocated|completing) break ;;
      down*|drain*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  [[ $state =~ ^(idle|mixed|allocated|completing)$ ]] || die "node $NODE not usable (state: ${state:-none}); see $LOG/slurmd.log and $LOG/slurmctld.log"
  say "node $NODE: $state"
  wait_for 60 "sacct" sacct -n -X -S now-1hours
  say "sacct: answers (accounting via slurmdbd -> MariaDB $DB)"
}

status() {
  local d pid rc=0
  for d in "${START_ORDER[@]}"; do
    if pid=$(running_pid "$d"); then say "$d: running (pid $pid)"; else say "$d: not running"; rc=1; fi
  done
  if command -v sinfo >/dev/null; then
    sinfo -N -o '%N %T %c %m' 2>&1 | sed 's/^/  /' || rc=1
    if sacct -n -X -S now-1hours >/dev/null 2>&1; then say "sacct: answers"; else say "sacct: not answering"; rc=1; fi
  fi
  return $rc
}

case ${1:-} in
  up)
    t0=$(date +%s%N)
    install_packages
    configure
    start_all
    ms=$((($(date +%s%N) - t0) / 1000000))
    say "up in $((ms / 1000)).$((ms % 1000 / 100)) s"
    ;;
  down)
    for d in "${STOP_ORDER[@]}"; do stop_daemon "$d"; done
    ;;
  status)
    status
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
