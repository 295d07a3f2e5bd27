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

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import free_port

MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


class SlurmUnavailable(RuntimeError):
    pass


def _munge_works(sock: Path = MUNGE_SOCKET) -> bool:
    encoded = subprocess.run(["munge", "-n", "-S", str(sock)], capture_output=True)
    if encoded.returncode != 0:
        return False
    decoded = subprocess.run(
        ["unmunge", "-S", str(sock)], input=encoded.stdout, capture_output=True
    )
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
        for tool in ("munged", "slurmctld", "slurmd", "sbatch", *self.tools):
            if shutil.which(tool) is None:
                raise SlurmUnavailable(
                    f"{tool} not found: install Debian's slurm-wlm and munge (launch/test.sh does)"
                )
        if os.geteuid() != 0:
            raise SlurmUnavailable("the local SLURM cluster needs root (slurmd runs jobs)")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "state").mkdir(exist_ok=True)
        for node in self.nodes:
            (self.folder / "spool" / node).mkdir(parents=True, exist_ok=True)
        self._start_munge()
        self.conf.write_text(self._config())
        self._start_daemons()
        self._wait_idle(timeout)

    tools: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ("localhost",)

    def _start_daemons(self) -> None:
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", "localhost"])

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

    def start_requeued_now(self, job_id: str, timeout: float = 300) -> None:
        """Once the job is back in the queue, let it start at once: a requeued job waits until
        its BeginTime (cred_expire, 15 s here; about 2 minutes on a default cluster).

        Not within the second its old run's credential was revoked, though: slurmd compares
        those times in whole seconds, and a new credential from that same second is refused
        ("Killing non-startable batch JobId=2: Job credential revoked", seen once in CI)."""
        self.wait_job(job_id, timeout, states=("PENDING", "REQUEUED"))
        time.sleep(2)
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")

    def daemon_logs(self) -> str:
        parts = []
        for path in sorted(self.folder.glob("slurm*.log")):
            parts.append(
                f"--- {path.name} (tail)\n" + "\n".join(path.read_text().splitlines()[-40:])
            )
        return "\n".join(parts)

    # -- internals

    def _start_munge(self) -> None:
        if MUNGE_SOCKET.exists() and _munge_works():
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
        while not (MUNGE_SOCKET.exists() and _munge_works()):
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
            states = state.split()
            if out.returncode == 0 and len(states) == len(self.nodes) and \
                    set(states) <= {"idle", "mixed"}:  # fmt: skip
                return
            time.sleep(0.5)
        raise SlurmUnavailable(
            f"nodes not idle after {timeout} s (state {state!r})\n{self.daemon_logs()}"
        )

    def _config(self) -> str:
        return (
            self._common_config("localhost", "cred_expire=15")
            + f"""\
NodeName=localhost NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 \\
    CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _common_config(self, controller: str, auth_info: str) -> str:
        f = self.folder
        return f"""\
ClusterName=srgan-test
SlurmctldHost={controller}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
AuthType=auth/munge
AuthInfo={auth_info}
CredType=cred/munge
StateSaveLocation={f / "state"}
SlurmdSpoolDir={f / "spool" / "%n"}
SlurmctldPidFile={f / "slurmctld.pid"}
SlurmdPidFile={f / "slurmd-%n.pid"}
SlurmctldLogFile={f / "slurmctld.log"}
SlurmdLogFile={f / "slurmd-%n.log"}
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
"""


class NamespacedSlurm(LocalSlurm):
    """SLURM nodes that are separate hosts to the network: each slurmd, and so each job step,
    runs in a network namespace of its own with its own address on a bridge, its own hostname
    (UTS namespace) and its own /etc/hosts (a bind mount in a private mount namespace);
    slurmctld runs in one more. Traffic between them stays on that bridge: the namespaces have
    no default route. munged is a private one (own key, own socket), named in slurm.conf, so the
    machine's munge and /etc are left alone. `kill_node` takes a node off as a power cut would.

    Measured facts behind the choices (nsenter, not `ip netns exec`, which remounts /sys and
    hides the cgroup tree slurmd needs; RealMemory below the host's share): ../shared/NOTES.md.
    """

    tools = ("ip", "nsenter", "unshare", "setpriv")

    def __init__(self, folder: Path, nodes: int = 2, cpus: int = 2, memory_mb: int = 6000) -> None:
        super().__init__(folder, cpus, memory_mb)
        self.nodes = tuple(f"node{i + 1}" for i in range(nodes))
        self.subnet = self._free_subnet()
        tag = self.subnet.split(".")[2]
        self.bridge = f"srganbr{tag}"
        self.hosts = {"ctl": f"{self.subnet}.2"} | {
            node: f"{self.subnet}.{11 + i}" for i, node in enumerate(self.nodes)
        }
        self.namespaces = {host: f"srgan{tag}-{host}" for host in self.hosts}
        self.munge_dir: Path | None = None

    # -- a node lost and back

    def kill_node(self, node: str) -> list[int]:
        """SIGKILL every process of the node (its slurmd, slurmstepd, the job's processes):
        what its slurmctld and the other nodes see when the machine dies."""
        pids = self._kill_all(node)
        self.processes.pop(f"slurmd-{node}").wait(timeout=10)
        return pids

    def start_node(self, node: str) -> None:
        self._spawn_in(node, f"slurmd-{node}", ["slurmd", "-D", "-f", str(self.conf), "-N", node])

    # -- internals

    @staticmethod
    def _free_subnet() -> str:
        used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
        for third in range(20 + os.getpid() % 200, 255):
            subnet = f"10.213.{third}"
            if f" {subnet}." not in used:
                return subnet
        raise SlurmUnavailable("no free 10.213.x.0/24 subnet for the test cluster")

    def _kill_all(self, host: str) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.namespaces[host]], capture_output=True, text=True
        ).stdout
        pids = [int(pid) for pid in out.split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def _ip(self, *args: str) -> None:
        result = subprocess.run(["ip", *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise SlurmUnavailable(f"ip {' '.join(args)}: {result.stderr.strip()}")

    def _start_network(self) -> None:
        existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for ns in self.namespaces.values():
            if ns in existing.split():
                raise SlurmUnavailable(f"network namespace {ns} exists already: not ours to reuse")
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        lines = ["127.0.0.1 localhost"]
        for host, address in self.hosts.items():
            ns, veth = self.namespaces[host], f"{self.bridge}{host[-1]}"
            self._ip("netns", "add", ns)
            self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._ip("link", "set", veth, "master", self.bridge, "up")
            self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
            lines.append(f"{address} {host}")
        (self.folder / "hosts").write_text("\n".join(lines) + "\n")

    def _start_munge(self) -> None:
        self._start_network()
        munge = pwd.getpwnam("munge")
        self.munge_dir = Path(tempfile.mkdtemp(prefix="srgan-munge-"))
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        for path in (self.munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        d = self.munge_dir
        self._spawn("munged", [
            "setpriv", f"--reuid={munge.pw_uid}", f"--regid={munge.pw_gid}", "--clear-groups",
            "munged", "--foreground", "--force", f"--socket={d / 'socket'}", f"--key-file={key}",
            f"--pid-file={d / 'munged.pid'}", f"--seed-file={d / 'munged.seed'}",
            f"--log-file={d / 'munged.log'}",
        ])  # fmt: skip
        deadline = time.monotonic() + 20
        while not _munge_works(d / "socket"):
            if self.processes["munged"].poll() is not None or time.monotonic() > deadline:
                raise SlurmUnavailable(f"private munged did not start: {self._munge_log()}")
            time.sleep(0.2)

    def _munge_log(self) -> str:
        log = self.munge_dir / "munged.log" if self.munge_dir else None
        return log.read_text()[-2000:] if log and log.is_file() else "(no log)"

    def _start_daemons(self) -> None:
        self._spawn_in("ctl", "slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        for node in self.nodes:
            self.start_node(node)

    def _spawn_in(self, host: str, name: str, argv: list[str]) -> None:
        """Every step execs, so the PID kept is the daemon's own, and what it forks (job steps)
        inherits the host's network, hostname and /etc/hosts."""
        inner = (
            f"hostname {host} && mount --bind {self.folder / 'hosts'} /etc/hosts && "
            f"exec {shlex.join(argv)}"
        )
        self._spawn(name, [
            "nsenter", f"--net=/run/netns/{self.namespaces[host]}", "--",
            "unshare", "--uts", "--mount", "--propagation", "private", "--", "sh", "-c", inner,
        ])  # fmt: skip

    def stop(self) -> None:
        super().stop()
        for host in self.namespaces:
            self._kill_all(host)  # job processes a killed daemon left behind
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        if self.munge_dir:
            shutil.rmtree(self.munge_dir, ignore_errors=True)

    def _config(self) -> str:
        sock = self.munge_dir / "socket" if self.munge_dir else MUNGE_SOCKET
        nodes = "".join(
            f"NodeName={node} NodeHostname={node} NodeAddr={self.hosts[node]} "
            f"CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN\n"
            for node in self.nodes
        )
        # a dead node is declared DOWN after SlurmdTimeout (300 s by default), and a job step's
        # processes get KillWait (30 s) between TERM and KILL: seconds here, not minutes
        return (
            self._common_config(f"ctl({self.hosts['ctl']})", f"socket={sock},cred_expire=15")
            + f"""\
SlurmdTimeout=10
KillWait=5
{nodes}PartitionName=debug Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
"""
        )
