"""A node process that is a container: started by ``docker run``, signalled through the Docker SDK.

The local process is the ``docker run`` client, attached to the container's stdout (the ready
line) and stderr (the node's log); it exits when the container does. Signals cannot go to the
client (SIGKILL and SIGSTOP are not forwarded), so :class:`ContainerProcess` sends them to the
container: ``kill`` is the SDK's kill, ``pause``/``resume`` freeze and thaw the container's
cgroup, SIGTERM is delivered to the node (PID 1 of its container), which leaves cleanly.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from fabric.launcher import NodeProcess

if TYPE_CHECKING:
    from .docker import DockerBackend


class ContainerProcess(NodeProcess):
    """A :class:`~fabric.launcher.NodeProcess` whose node runs in container ``name`` joining ``sandbox``."""

    def __init__(self, *args: Any, backend: DockerBackend, sandbox: str, name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backend, self.sandbox, self.container = backend, sandbox, name
        self.frozen = False

    def start(self) -> ContainerProcess:
        self.backend.sandbox(self.sandbox)
        self.backend.remove_container(self.container)  # a container left by an earlier process of this node
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = self.backend.run_prefix(self.sandbox, self.container, self.data_dir, self.env or {})
        self.env = {}  # passed to the container by run_prefix, not to the client
        super().start()
        return self

    def _docker(self, call: str, **kwargs: Any) -> bool:
        """One SDK call on the container; ``False`` if it is gone (or not created yet)."""
        import docker
        try:
            getattr(self.backend.client.api, call)(self.container, **kwargs)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError:
            if not self._running():  # it ended (or is being removed) meanwhile
                return False
            raise
        return True

    def _running(self) -> bool:
        import docker
        try:
            return bool(self.backend.client.api.inspect_container(self.container)["State"]["Running"])
        except docker.errors.NotFound:
            return False

    def signal(self, sig: int) -> None:
        if not self.alive():
            return
        if sig == signal.SIGSTOP:
            self.pause()
        elif sig == signal.SIGCONT:
            self.resume()
        else:
            self.resume()  # a frozen container gets no signal
            if not self._docker("kill", signal=int(sig)) and sig == signal.SIGKILL:
                super().signal(sig)  # the container never came up: end the client

    def pause(self) -> None:
        if self.alive() and not self.frozen:
            self._docker("pause")
            self.frozen = True

    def resume(self) -> None:
        if self.frozen:
            self.frozen = False
            self._docker("unpause")
