#!/bin/sh
# A single-node Slurm cluster on this machine, for the tests of the grid's Slurm backend (run as root).
#
#   sh tests/slurm_cluster.sh install   apt-get install slurm-wlm and munge when sbatch is missing
#   sh tests/slurm_cluster.sh start     write the munge key and slurm.conf if missing, start munged,
#                                       slurmctld and slurmd, wait until the node takes jobs
#   sh tests/slurm_cluster.sh stop      stop the daemons that `start` started (by their pid files)
#
# `start` does nothing when the cluster already answers, and never touches a slurm.conf it did not write,
# so it is safe on a machine with a real Slurm. The node is this host with all its CPUs, in one default
# partition; daemons run as root with state, logs and pid files under $STATE_DIR.
set -eu

STATE_DIR=${TAWT_SLURM_DIR:-/var/tmp/tawt-slurm}
SLURM_CONF_FILE=/etc/slurm/slurm.conf
MARKER="# written by tawt tests/slurm_cluster.sh"
MUNGE_SOCKET_DIR=/run/munge

say() {
    echo "[slurm_cluster] $*"
}

cluster_answers() {
    command -v sinfo >/dev/null 2>&1 && [ -f "$SLURM_CONF_FILE" ] &&
        [ -n "$(sinfo --noheader --responding --states=idle,mixed,allocated --format=%n 2>/dev/null)" ]
}

install() {
    if command -v sbatch >/dev/null 2>&1; then
        say "sbatch is installed"
        return
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    say "installed slurm-wlm $(sbatch --version | cut -d' ' -f2) and munge"
}

write_slurm_conf() {
    if [ -f "$SLURM_CONF_FILE" ] && ! grep -qF "$MARKER" "$SLURM_CONF_FILE"; then
        echo "$SLURM_CONF_FILE exists and was not written by this script; not touching it" >&2
        exit 1
    fi
    host=$(hostname -s)
    mkdir -p /etc/slurm "$STATE_DIR/ctld" "$STATE_DIR/slurmd"
    cat >"$SLURM_CONF_FILE" <<EOF
$MARKER: a single-node cluster for the tests
ClusterName=tawt-tests
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Start a job as soon as resources free up, not on the next pass 3 s later (the tests' runs last seconds).
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# Finished jobs leave the queue at once, so that an empty squeue means the work is over.
MinJobAge=2
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=tests Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 2>/dev/null
    fi
    chown -R munge:munge /etc/munge
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge
    chown munge:munge "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge
    # munged refuses to run as root; as the munge user it writes its pid file where it may.
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_SOCKET_DIR/munged.pid"
    cp "$MUNGE_SOCKET_DIR/munged.pid" "$STATE_DIR/munged.pid"
}

start() {
    if cluster_answers; then
        say "a cluster already answers: $(sinfo --noheader --format='%P %n %c CPUs %t')"
        return
    fi
    command -v slurmctld >/dev/null 2>&1 || { echo "slurmctld not found: run '$0 install' first" >&2; exit 1; }
    mkdir -p "$STATE_DIR"
    rm -f "$STATE_DIR"/*.pid
    write_slurm_conf
    start_munge
    # -c: a clean start, forgetting the jobs of an earlier test cluster.
    /usr/sbin/slurmctld -c
    /usr/sbin/slurmd
    for _ in $(seq 60); do
        if cluster_answers; then
            say "up: $(sinfo --noheader --format='partition %P, node %n, %c CPUs, %t')"
            return
        fi
        sleep 0.5
    done
    echo "the node did not come up in 30 s; see $STATE_DIR/slurmctld.log and $STATE_DIR/slurmd.log" >&2
    exit 1
}

stop() {
    for daemon in slurmd slurmctld munged; do
        pid_file=$STATE_DIR/$daemon.pid
        [ -f "$pid_file" ] || continue
        pid=$(cat "$pid_file")
        # Only the daemon itself: a pid file left by an earlier boot may name another process by now.
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$daemon" ] && kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            say "stopped $daemon ($pid)"
        fi
        rm -f "$pid_file"
    done
}

case ${1:-} in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: sh $0 install|start|stop" >&2
        exit 2
        ;;
esac
