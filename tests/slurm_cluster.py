"""A one-node SLURM cluster on this machine, started and stopped by the test harness.

The daemons run in the foreground as children of the test process (no systemd here), each with
its PID kept so `stop()` ends exactly what `start()` began. The configuration lives in a folder
of its own and clients find it through SLURM_CONF, so nothing under /etc/slurm is touched.
The node is `localhost` at 127.0.0.1, its NodeHostname this machine's hostname.
`cred_expire=15` (default 120) is also how long a requeued job waits before it may start
again; the default would add two idle minutes to every requeue test.

Needs Debian's slurm-wlm and munge (launch/test.sh installs them) and root, as CI has.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from helpers import free_port

MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


class SlurmUnavailable(RuntimeError):
    pass


def _munge_works(env: dict[str, str]) -> bool:
    encoded = subprocess.run(["munge", "-n"], capture_output=True, env=env)
    if encoded.returncode != 0:
        return False
    decoded = subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True, env=env)
    return decoded.returncode == 0


class LocalSlurm:
    def __init__(self, folder: Path, cpus: int | None = None, memory_mb: int = 8000) -> None:
        self.folder = folder
        self.cpus = cpus or os.cpu_count() or 2
        self.memory_mb = memory_mb
        self.conf = folder / "slurm.conf"
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- life cycle

    def start(self, timeout: float = 60) -> None:
        for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
            if shutil.which(tool) is None:
                raise SlurmUnavailable(
                    f"{tool} not found: install Debian's slurm-wlm and munge (launch/test.sh does)"
                )
        if os.geteuid() != 0:
            raise SlurmUnavailable("the local SLURM cluster needs root (slurmd runs jobs)")
        self.folder.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(exist_ok=True)
        self._start_munge()
        self.conf.write_text(self._config())
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", "localhost"])
        self._wait_idle(timeout)

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            proc = self.processes.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def __enter__(self) -> LocalSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients

    def run(self, *args: str, check: bool = True, timeout: float = 60, **kwargs: object) -> str:
        result = subprocess.run(
            list(args), capture_output=True, text=True, env=kwargs.pop("env", self.env),
            timeout=timeout, **kwargs,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (kept MinJobAge seconds after the job ends)."""
        fields: dict[str, str] = {}
        for token in self.run("scontrol", "-o", "show", "job", job_id).split():
            key, _, value = token.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_job(self, job_id: str, timeout: float, states: tuple[str, ...] = ()) -> dict[str, str]:
        """Wait until the job reaches a final state (or one of `states`)."""
        final = states or (
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        )
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in final:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout} s")
            time.sleep(0.5)

    def daemon_logs(self) -> str:
        parts = []
        for name in ("slurmctld", "slurmd"):
            path = self.folder / f"{name}.log"
            if path.is_file():
                parts.append(
                    f"--- {name}.log (tail)\n" + "\n".join(path.read_text().splitlines()[-40:])
                )
        return "\n".join(parts)

    # -- internals

    def _start_munge(self) -> None:
        if MUNGE_SOCKET.exists() and _munge_works(self.env):
            return  # a munged of this machine is already serving; not ours to stop
        munge_user = pwd.getpwnam("munge")
        run_dir = MUNGE_SOCKET.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chown(run_dir, munge_user.pw_uid, munge_user.pw_gid)
        run_dir.chmod(0o755)
        self._spawn(
            "munged",
            ["munged", "--foreground", "--force", f"--log-file={self.folder / 'munged.log'}"],
            user=munge_user.pw_uid,
        )
        deadline = time.monotonic() + 20
        while not (MUNGE_SOCKET.exists() and _munge_works(self.env)):
            if self.processes["munged"].poll() is not None or time.monotonic() > deadline:
                raise SlurmUnavailable(f"munged did not start; see {self.folder / 'munged.log'}")
            time.sleep(0.2)

    def _spawn(self, name: str, argv: list[str], user: int | None = None) -> None:
        log = open(self.folder / f"{name}.out", "wb")  # noqa: SIM115 - kept open for the daemon
        if user is not None:
            # munged refuses to run as root; the log file must belong to its user
            os.chown(self.folder, user, -1)
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, user=user,
            start_new_session=True,
        )  # fmt: skip

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited {proc.returncode}\n{self.daemon_logs()}")
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env
            )
            state = out.stdout.strip()
            if out.returncode == 0 and state in ("idle", "mixed"):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(
            f"node not idle after {timeout} s (state {state!r})\n{self.daemon_logs()}"
        )

    def _config(self) -> str:
        f = self.folder
        return f"""\
ClusterName=srgan-test
SlurmctldHost=localhost
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=15
CredType=cred/munge
StateSaveLocation={f / "state"}
SlurmdSpoolDir={f / "spool"}
SlurmctldPidFile={f / "slurmctld.pid"}
SlurmdPidFile={f / "slurmd.pid"}
SlurmctldLogFile={f / "slurmctld.log"}
SlurmdLogFile={f / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
SchedulerParameters=sched_interval=2
NodeName=localhost NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 \\
    CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
