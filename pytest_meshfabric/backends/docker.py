"""The docker backend: every node in a container of its own, on a user-defined Docker network.

::

    test process ── mfd<N> (10.201.N.1/24, the network's gateway) ──┬── sandbox .2 ◄─ node container
                                                                    └── sandbox .3 ◄─ node container

Each placement is a pod, as Kubernetes has them: a *sandbox* container (``sleep infinity``)
owns the network namespace, with a fixed address on the network, and the node runs in a
container that joins it (``--network container:<sandbox>``). So a node can be killed,
restarted (a new container on the same data dir: same identity, name, address and port) or
paused while its network namespace, and any partition rules in it, stay. The namespace is
also attached as ``/run/netns/mfd-<worker>-<pid>-<N>-<host>``: the nemesis's packet filter
(:mod:`..packetfilter`) puts its iptables rules there exactly as on the netns backend, which
is what group partitions, one-way cuts and loss need. :meth:`DockerBackend.disconnect` /
:meth:`DockerBackend.connect` take a node off the network altogether (the SDK's network
disconnect/connect; the test process loses it too, control sockets excepted).

Containers run the host's own Python: the image is an empty root file system (symlinks for
merged ``/usr``) made with ``docker import``, and each container bind-mounts ``/usr``, the
interpreter's prefix and the directories on ``sys.path`` read-only, and the node's data dir
read-write at the same path, so control sockets work as on the other backends. No registry is
ever contacted. Node containers are started with the ``docker`` client (``docker run``, whose
attached stdout carries the node's ready line, as for any node process); kill, pause, resume
and signals go through the Docker SDK (:class:`ContainerProcess`).

Everything carries the labels ``meshfabric=1`` and ``meshfabric.pid=<pid>``; leftovers of a run
that died outright are removed by the next run.
"""

from __future__ import annotations

import functools
import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
import io
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

from fabric.errors import ConfigError

from . import NamespacedPlacements, Placement
from .containers import ContainerProcess
from .dockerd import DockerDaemon, DockerUnavailable, unavailable_reason  # noqa: F401 - re-exported
from .netns import HostNumbers, _alive, _json, _SubnetLock, first_free, ip, subnets_in_use

PREFIX = "10.201"  # networks 10.201.N.0/24; the netns backend uses 10.200
IMAGE = "meshfabric-node"
LABEL = "meshfabric"


def _host_root_links() -> dict[str, str]:
    """Top-level directories that are symlinks on this host (merged ``/usr``: ``lib -> usr/lib``)."""
    return {name: os.readlink(f"/{name}") for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
            if os.path.islink(f"/{name}")}


def _rootfs_tar() -> bytes:
    """The image's whole file system: empty directories and the host's top-level symlinks."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("usr", "etc", "proc", "sys", "dev", "tmp", "run", "root"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        for name, target in sorted(_host_root_links().items()):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


@functools.cache
def read_only_mounts() -> tuple[str, ...]:
    """Host paths every container mounts read-only: /usr, top-level dirs that are not symlinks
    into it, the interpreter's prefixes and every directory on ``sys.path`` not already covered."""
    import fabric
    wanted = ["/usr", *(f"/{d}" for d in ("lib", "lib64", "bin") if os.path.isdir(f"/{d}")
                        and not os.path.islink(f"/{d}")),
              sys.prefix, sys.base_prefix, str(Path(fabric.__file__).resolve().parents[1])]
    wanted += [p for p in sys.path if p and os.path.isdir(p)]
    mounts: list[str] = []
    for path in sorted({os.path.realpath(p) for p in wanted} - {"/", "/proc", "/sys", "/dev"}, key=len):
        if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
            mounts.append(path)
    return tuple(mounts)


def python_path() -> str:
    """``PYTHONPATH`` for containers: the repository first, then this process's ``sys.path``."""
    import fabric
    entries = [str(Path(fabric.__file__).resolve().parents[1])]
    entries += [p for p in sys.path if p and os.path.isdir(p) and p not in entries]
    return os.pathsep.join(entries)


class DockerBackend(NamespacedPlacements):
    """A private (or ``DOCKER_HOST``) daemon, one image, one network, and a sandbox per node."""

    name = "docker"
    network_faults = True

    def __init__(self, worker: str = "main") -> None:
        self.worker = worker.replace("-", "_")
        self.pid = os.getpid()
        self.labels = {LABEL: "1", f"{LABEL}.pid": str(self.pid), f"{LABEL}.worker": self.worker}
        super().__init__()
        self._removals: list[Future[None]] = []
        self._sandboxes: dict[str, Future[None]] = {}  # namespace -> its sandbox, being started
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="meshfabric-docker")
        self._hosts = HostNumbers(self.name)
        try:
            self.daemon = DockerDaemon(self.worker)
        except DockerUnavailable as exc:
            raise ConfigError(f"the docker backend cannot run: {exc}") from None
        self.client = self.daemon.client
        try:
            self._sweep_containers()
            self.image = self._image()
            self._network()
        except BaseException:
            self.close()
            raise

    # -- set-up --

    def _sweep_containers(self) -> None:
        """Remove containers and networks of runs (on a shared daemon) whose process is gone."""
        for container in self.client.containers.list(all=True, filters={"label": LABEL}):
            if not _alive(int(container.labels.get(f"{LABEL}.pid", "0") or 0)):
                container.remove(force=True)
        for network in self.client.networks.list(filters={"label": LABEL}):
            if not _alive(int((network.attrs.get("Labels") or {}).get(f"{LABEL}.pid", "0") or 0)):
                network.remove()
        for ns in _json("netns", "list"):
            parts = ns.get("name", "").split("-")
            if parts[0] == "mfd" and len(parts) == 5 and parts[2].isdigit() and not _alive(int(parts[2])):
                ip("netns", "del", ns["name"], check=False)

    def _image(self) -> str:
        """``meshfabric-node:<content hash>``, imported unless the daemon has it already."""
        data = _rootfs_tar()
        tag = hashlib.sha256(data).hexdigest()[:12]
        ref = f"{IMAGE}:{tag}"
        if not self.client.images.list(name=ref):
            self.client.api.import_image_from_data(data, repository=IMAGE, tag=tag,
                                                   changes=[f"LABEL {LABEL}=1"])
        return ref

    def _network(self) -> None:
        import docker
        with _SubnetLock():
            self.net = self._free_subnet()
            self.host = f"{PREFIX}.{self.net}.1"
            self.network_name = f"mfd-{self.worker}-{self.pid}"
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                subnet=f"{PREFIX}.{self.net}.0/24", gateway=self.host)])
            self.network = self.client.networks.create(
                self.network_name, driver="bridge", ipam=ipam, labels=self.labels,
                options={"com.docker.network.bridge.name": f"mfd{self.net}"})
        if not any(a.get("local") == self.host for link in _json("-4", "addr", "show")
                   for a in link.get("addr_info", [])):
            raise ConfigError(f"the Docker daemon at {self.daemon.url} runs in another network namespace: its "
                              f"network's gateway {self.host} is not an address of this one; unset DOCKER_HOST "
                              "to let the backend start a private dockerd here")

    def _free_subnet(self) -> int:
        """A ``10.201.N.0/24`` that no address here and no network of the daemon uses."""
        used = subnets_in_use(PREFIX)
        for net in self.client.networks.list():
            for pool in (net.attrs.get("IPAM") or {}).get("Config") or []:
                if pool.get("Subnet", "").startswith(PREFIX + "."):
                    used.add(int(pool["Subnet"].split(".")[2]))
        return first_free(PREFIX, used)

    # -- placements --

    def place(self, label: str) -> Placement:
        host = self._hosts.take()
        namespace = f"mfd-{self.worker}-{self.pid}-{self.net}-{host}"
        address = f"{PREFIX}.{self.net}.{host}"
        process = functools.partial(ContainerProcess, backend=self, sandbox=namespace, name=f"{namespace}-node")
        placement = Placement(label, bind="0.0.0.0:0", ip=address, namespace=namespace, process_factory=process)
        self._placements[namespace] = placement
        self._sandboxes[namespace] = self._pool.submit(self._start_sandbox, namespace, address)
        return placement

    def sandbox(self, namespace: str) -> None:
        """Wait until the sandbox of ``namespace`` runs (they start in the background, ~0.5 s each)."""
        self._sandboxes[namespace].result()

    def _start_sandbox(self, name: str, address: str) -> None:
        api = self.client.api
        host_config = api.create_host_config(binds=[f"{m}:{m}:ro" for m in read_only_mounts()],
                                             network_mode=self.network_name, log_config={"Type": "none"})
        networking = api.create_networking_config({self.network_name: api.create_endpoint_config(
            ipv4_address=address)})
        api.create_container(self.image, ["/usr/bin/sleep", "infinity"], name=name, labels=self.labels,
                             host_config=host_config, networking_config=networking, stop_signal="SIGKILL")
        api.start(name)
        pid = api.inspect_container(name)["State"]["Pid"]
        ip("netns", "attach", name, str(pid))

    def release(self, placement: Placement) -> None:
        """Remove the node's containers and namespace name, in the background (``close`` waits)."""
        namespace = placement.namespace or ""
        if self._placements.pop(namespace, None) is None:
            return
        self._removals.append(self._pool.submit(self._release, namespace, self._sandboxes.pop(namespace, None)))

    def _release(self, namespace: str, started: Future[None] | None) -> None:
        self.remove_container(f"{namespace}-node")
        if started is not None:
            started.exception()  # wait for it, however it ended
            self.remove_container(namespace)
        ip("netns", "del", namespace, check=False)

    def remove_container(self, container: str) -> None:
        import docker
        try:
            self.client.api.remove_container(container, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # "removal already in progress" (--rm): gone soon
            if "in progress" not in str(exc):
                raise

    def run_prefix(self, sandbox: str, name: str, data_dir: Path, env: dict[str, str]) -> list[str]:
        """``docker run`` arguments that start a node's command in a container joining ``sandbox``."""
        cmd = ["docker", "--host", self.daemon.url, "run", "--rm", "--name", name, "--network",
               f"container:{sandbox}", "--log-driver", "none", "--stop-signal", "SIGTERM"]
        for key, value in self.labels.items():
            cmd += ["--label", f"{key}={value}"]
        for mount in read_only_mounts():
            cmd += ["--volume", f"{mount}:{mount}:ro"]
        cmd += ["--volume", f"{data_dir}:{data_dir}:rw", "--workdir", str(data_dir)]
        for key, value in {**env, "PYTHONPATH": python_path(), "PYTHONDONTWRITEBYTECODE": "1"}.items():
            cmd += ["--env", f"{key}={value}"]
        return [*cmd, self.image]

    # -- the network itself --

    def disconnect(self, placement: Placement) -> None:
        """Take the node off the network (Docker's network disconnect): no packet in or out."""
        self.network.disconnect(placement.namespace, force=True)

    def connect(self, placement: Placement) -> None:
        """Put it back, at the same address and as ``eth0`` (the packet filter's rules name it)."""
        namespace = placement.namespace or ""
        self.network.connect(namespace, ipv4_address=placement.ip)
        links = [link["ifname"] for link in _json("-n", namespace, "link", "show") if link["ifname"] != "lo"]
        if links and links[0] != "eth0":
            ip("-n", namespace, "link", "set", links[0], "down")
            ip("-n", namespace, "link", "set", links[0], "name", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "route", "replace", "default", "via", self.host)

    # -- the end --

    def close(self) -> None:
        if not self._release_all():
            return
        for removal in self._removals:
            removal.exception()  # a container that would not go is swept with its daemon
        self._pool.shutdown()
        if getattr(self, "network", None) is not None:
            try:
                self.network.remove()
            except Exception:  # noqa: BLE001
                pass
        self.client.close()
        self.daemon.stop()

    # -- descriptions --

    def describe(self) -> str:
        return (f"docker (a container per node on network {PREFIX}.{getattr(self, 'net', '?')}.0/24, "
                f"{self.daemon.describe()})")

    def cleanup_commands(self) -> list[str]:
        docker = f"docker --host {self.daemon.url}"
        commands = [f"{docker} rm -f $({docker} ps -aq --filter label={LABEL}.pid={self.pid})"]
        commands += [f"ip netns del {ns}" for ns in self._placements]
        commands += [f"{docker} network rm {self.network_name}"]
        return commands + self.daemon.cleanup_commands()

