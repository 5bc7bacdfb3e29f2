"""Kernel packet filtering inside the nodes' network namespaces: the nemesis's network faults.

Every namespace the nemesis touches gets one iptables chain, ``MESHFABRIC``, jumped to from
``INPUT`` and ``OUTPUT`` for every packet that is not to or from the test process (the
bridge address: the OTLP receiver and the test's clients), so faults cut links *between
nodes* while spans keep arriving. A fault is a list of rules, each in one namespace; healing
deletes them (``heal_all`` flushes the chains). Rules go in with one ``iptables-restore
--noflush`` per namespace, so a partition of many nodes costs one process per namespace.

Faults use only what this kernel has (see /work/shared/FACTS.md): ``DROP`` for partitions,
``-m statistic --mode random --probability p`` for loss. There is no ``netem``: latency sends
packets to an ``NFQUEUE`` whose user-space delayer (:mod:`.delayer`) accepts them later. Those
rules live in a second chain, ``MESHFABRIC_DELAY``, jumped to after ``MESHFABRIC``: a packet a
partition or loss rule drops is never queued, and a queued packet (which leaves the table when
accepted) has already passed every drop rule, whatever order the faults came in.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

from fabric.errors import FabricError

CHAIN = "MESHFABRIC"
DELAY_CHAIN = "MESHFABRIC_DELAY"
CHAINS = (CHAIN, DELAY_CHAIN)


class PacketFilterError(FabricError):
    """An iptables command failed inside a node's namespace."""


def unavailable_reason() -> str | None:
    """Why iptables rules cannot be set here (``None``: they can)."""
    if shutil.which("iptables") is None or shutil.which("iptables-restore") is None:
        return "iptables is not installed (Debian: apt-get install -y iptables; .ci/run does it)"
    return None


@dataclass(frozen=True)
class Rule:
    """One iptables rule of ``chain`` (``MESHFABRIC`` or ``MESHFABRIC_DELAY``) in one namespace,
    on packets that come ``in`` through the node's ``eth0`` or go ``out`` of it."""

    namespace: str
    args: tuple[str, ...]
    direction: str = "in"
    chain: str = CHAIN

    @property
    def spec(self) -> list[str]:
        """The rule as iptables arguments after ``-A CHAIN`` (``-i``/``-o`` matches only in INPUT/OUTPUT)."""
        return ["-i" if self.direction == "in" else "-o", "eth0", *self.args]


@dataclass
class RuleSet:
    """The rules of one fault, removable on their own; ``epoch``: the filter's flushes before them."""

    rules: list[Rule] = field(default_factory=list)
    epoch: int = 0


def drop_from(namespace: str, source_ip: str, probability: float | None = None) -> Rule:
    """Drop packets arriving in ``namespace`` from ``source_ip`` (all, or with ``probability``)."""
    return Rule(namespace, ("-s", source_ip, *_statistic(probability), "-j", "DROP"))


def drop_all(namespace: str, probability: float, direction: str) -> Rule:
    """Drop a random share of the node-to-node packets entering (``in``) or leaving (``out``)."""
    return Rule(namespace, (*_statistic(probability), "-j", "DROP"), direction)


def to_queue(namespace: str, queue: int, direction: str, peer_ip: str | None = None) -> Rule:
    """Send node-to-node packets leaving (``out``, to ``peer_ip`` or any node) or entering
    (``in``) ``namespace`` to NFQUEUE ``queue``. No ``--queue-bypass``: if the delayer dies, the
    link goes dark (loudly) rather than silently losing its delay."""
    peer = ("-d" if direction == "out" else "-s", peer_ip) if peer_ip else ()
    return Rule(namespace, (*peer, "-j", "NFQUEUE", "--queue-num", str(queue)), direction, DELAY_CHAIN)


def _statistic(probability: float | None) -> tuple[str, ...]:
    if probability is None or probability >= 1.0:
        return ()
    return ("-m", "statistic", "--mode", "random", "--probability", f"{probability:.4f}")


class PacketFilter:
    """The ``MESHFABRIC`` chains of the namespaces faults touched; ``host`` is never filtered."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._prepared: set[str] = set()
        self._epoch = 0  # flushes so far: a rule set applied before the last flush is gone already

    def _run(self, namespace: str, *args: str, stdin: str | None = None) -> None:
        cmd = ["ip", "netns", "exec", namespace, *args]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
        if done.returncode != 0:
            raise PacketFilterError(f"`{' '.join(cmd)}` failed in namespace {namespace}: "
                                    f"{done.stderr.strip() or done.returncode}")

    def apply(self, rules: list[Rule]) -> RuleSet:
        """Add ``rules`` (one ``iptables-restore`` per namespace); returns them for :meth:`remove`."""
        by_namespace: dict[str, list[Rule]] = {}
        for rule in rules:
            by_namespace.setdefault(rule.namespace, []).append(rule)
        for namespace, ns_rules in by_namespace.items():
            lines = ["*filter"]
            if namespace not in self._prepared:
                lines += [f":{chain} - [0:0]" for chain in CHAINS]
                lines += [f"-A {hook} ! {flag} {self.host} -j {chain}"
                          for chain in CHAINS for hook, flag in (("INPUT", "-s"), ("OUTPUT", "-d"))]
            lines += [" ".join(["-A", r.chain, *r.spec]) for r in ns_rules]
            self._run(namespace, "iptables-restore", "--noflush", "-w", stdin="\n".join(lines + ["COMMIT", ""]))
            self._prepared.add(namespace)
        return RuleSet(list(rules), self._epoch)

    def remove(self, rule_set: RuleSet) -> None:
        """Delete the rules of one fault (rules already gone are ignored): one ``iptables-restore``
        per namespace, or one ``iptables -D`` per rule where some rule was gone already."""
        by_namespace: dict[str, list[Rule]] = {}
        for rule in rule_set.rules if rule_set.epoch == self._epoch else ():  # else flushed since
            if rule.namespace in self._prepared:
                by_namespace.setdefault(rule.namespace, []).append(rule)
        for namespace, ns_rules in by_namespace.items():
            lines = ["*filter", *(" ".join(["-D", r.chain, *r.spec]) for r in ns_rules), "COMMIT", ""]
            try:
                self._run(namespace, "iptables-restore", "--noflush", "-w", stdin="\n".join(lines))
            except PacketFilterError:  # all or nothing: delete those still there one by one
                for rule in ns_rules:
                    subprocess.run(["ip", "netns", "exec", namespace, "iptables", "-w", "-D", rule.chain, *rule.spec],
                                   capture_output=True)
        rule_set.rules.clear()

    def flush_all(self) -> list[str]:
        """Empty every ``MESHFABRIC`` and ``MESHFABRIC_DELAY`` chain; returns the namespaces that
        could not be flushed."""
        failed = []
        for namespace in sorted(self._prepared):
            try:
                self._run(namespace, "iptables-restore", "--noflush", "-w",
                          stdin="\n".join(["*filter", *(f"-F {chain}" for chain in CHAINS), "COMMIT", ""]))
            except PacketFilterError:
                failed.append(namespace)  # the namespace is gone (node removed): nothing left to flush
        self._epoch += 1
        return failed

    def forget(self, namespace: str) -> None:
        """The namespace was deleted (its rules with it)."""
        self._prepared.discard(namespace)

