"""A real single-node SLURM cluster with accounting, on localhost, from Debian's packages.

    s2lpo cluster up [--dir D] [--cpus N]   # install (apt, as root) if needed, start; prints the SLURM_CONF line
    s2lpo cluster status
    s2lpo cluster down                      # stop every daemon by the PID it recorded

For the sweep tests and for trying sweeps out. Start order: munge (own key and socket) → MariaDB on
127.0.0.1 (own datadir and socket) → slurmdbd → ``sacctmgr add cluster`` → slurmctld → slurmd → wait
until ``sinfo`` shows the node idle. Everything lives under one directory (default
``/tmp/s2lpo-slurm``: unix socket paths must stay short); every command needs ``SLURM_CONF`` pointing at
its ``etc/slurm.conf``. Accounting is kept on purpose: without it submitit cannot see a cancelled job.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
DEFAULT_ROOT = Path(os.environ.get("S2LPO_SLURM_DIR", "/tmp/s2lpo-slurm"))
DAEMONS = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]  # start order; stopped in reverse


class ClusterError(RuntimeError):
    pass


class LocalCluster:
    def __init__(self, root: Path = DEFAULT_ROOT, cpus: int = 8, base_port: int = 16817):
        self.root, self.cpus = Path(root), cpus
        self.ctld_port, self.slurmd_port, self.dbd_port, self.db_port = (base_port, base_port + 1, base_port + 2,
                                                                         base_port + 3)
        self.etc, self.run = self.root / "etc", self.root / "run"
        self.conf = self.etc / "slurm.conf"
        self.munge_socket = self.run / "munge.sock"
        self.db_socket = self.run / "mysqld.sock"
        self.host = socket.gethostname().split(".")[0]

    # -- environment --------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def export(self) -> None:
        """Point this process (and what it starts: sbatch, sacct, submitit) at the cluster."""
        os.environ["SLURM_CONF"] = str(self.conf)

    def _run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({out.returncode}): {(out.stderr or out.stdout)[-1500:]}")
        return out

    # -- install ------------------------------------------------------------------------------------
    @staticmethod
    def installed() -> bool:
        return all(shutil.which(b) or Path("/usr/sbin", b).exists()
                   for b in ("sbatch", "sacct", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd"))

    @staticmethod
    def install() -> None:
        if LocalCluster.installed():
            return
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise ClusterError("SLURM is not installed and this is not root with apt-get: install "
                               f"{' '.join(PACKAGES)} (Debian) or point SLURM_CONF at a cluster")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise ClusterError(f"apt-get install failed: {out.stderr[-1500:]}")

    # -- configuration ------------------------------------------------------------------------------
    def write_config(self) -> None:
        for d in ("etc", "run", "log", "state", "spool", "mysql"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        r = self.root
        auth = f"socket={self.munge_socket}"
        self.conf.write_text(f"""\
ClusterName=s2lpo
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
AuthType=auth/munge
AuthInfo={auth},cred_expire=10
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MailProg=/bin/true
JobRequeue=1
ReturnToService=2
MinJobAge=3600
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
AccountingStoragePass={self.munge_socket}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
        dbd = self.etc / "slurmdbd.conf"
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo={auth}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile={r}/run/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
""")
        dbd.chmod(0o600)

    # -- daemons ------------------------------------------------------------------------------------
    def _pid(self, name: str) -> int | None:
        p = self.run / f"{name}.pid"
        try:
            pid = int(p.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def _wait(self, what: str, ok, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ok():
                return
            time.sleep(0.2)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((self.root / "log").glob("*.log")))
        raise ClusterError(f"{what} did not come up within {timeout:.0f}s\n{logs}")

    def _start_munge(self) -> None:
        key = self.etc / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        self._run("munged", "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
                  f"--pid-file={self.run / 'munged.pid'}", f"--log-file={self.root / 'log' / 'munged.log'}",
                  f"--seed-file={self.run / 'munged.seed'}")
        self._wait("munged", lambda: self.munge_socket.exists())

    def _start_mariadb(self) -> None:
        datadir = self.root / "mysql"
        fresh = not (datadir / "mysql").exists()
        if fresh:
            self._run("mariadb-install-db", f"--datadir={datadir}", "--user=root",
                      "--auth-root-authentication-method=socket", "--skip-test-db", timeout=180)
        log = open(self.root / "log" / "mariadbd.log", "ab")
        subprocess.Popen(["mariadbd", f"--datadir={datadir}", "--user=root", f"--socket={self.db_socket}",
                          f"--port={self.db_port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
                          f"--pid-file={self.run / 'mariadbd.pid'}", "--innodb-buffer-pool-size=32M"],
                         stdout=log, stderr=log, start_new_session=True)
        self._wait("mariadbd", lambda: self._run("mariadb", "-S", str(self.db_socket), "-u", "root", "-e",
                                                 "select 1", check=False).returncode == 0)
        self._run("mariadb", "-S", str(self.db_socket), "-u", "root", "-e",
                  "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
                  "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
                  "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")

    def up(self) -> LocalCluster:
        """Install if needed, start every daemon that is not running, wait for an idle node."""
        self.install()
        self.write_config()
        self.export()
        if self._pid("munged") is None:
            self._start_munge()
        if self._pid("mariadbd") is None:
            self._start_mariadb()
        if self._pid("slurmdbd") is None:
            self._run("slurmdbd")
            self._wait("slurmdbd", lambda: self._run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0)
        if "s2lpo" not in self._run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").stdout.split():
            self._run("sacctmgr", "-i", "add", "cluster", "s2lpo")
        if self._pid("slurmctld") is None:
            self._run("slurmctld")
        if self._pid("slurmd") is None:
            self._run("slurmd")
        self._wait("an idle node", self.ready)
        return self

    def ready(self) -> bool:
        out = self._run("sinfo", "-h", "-o", "%t", check=False)
        return out.returncode == 0 and any(s.strip("*~#") in ("idle", "mix", "alloc") for s in out.stdout.split())

    def down(self) -> None:
        """Stop the daemons by their recorded PIDs (SIGTERM, then SIGKILL after 10 s)."""
        for name in reversed(DAEMONS):
            pid = self._pid(name)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + 10
            while time.time() < deadline and self._pid(name) is not None:
                time.sleep(0.1)
            if self._pid(name) is not None:
                os.kill(pid, signal.SIGKILL)

    def status(self) -> dict[str, int | None]:
        return {name: self._pid(name) for name in DAEMONS}
