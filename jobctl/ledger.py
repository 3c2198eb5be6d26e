"""A Deployment Target's ledger: who holds what, who waits, in what order. Pure: no I/O, no Temporal.

Resources are named amounts: a Flink session target has "slots"; a Dataflow target has "jobs" (and
"workers" when the target caps them). A Job asks once for what its spec needs; the ledger grants in strict
FIFO order (the head of the queue is never overtaken, so a big Job cannot starve behind small ones), never
beyond capacity, and never twice to the same Job. Releasing removes whatever that Job holds or waits for,
and nothing else.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from jobctl.models import Model

Resources = dict[str, int]


class Ask(Model):
    job_id: str
    holder: str  # the asking Job's workflow id (signalled on grant, checked for reclaim)
    resources: Resources
    asked_at: datetime
    # An update's successor takes over its predecessor's lease: it goes to the head of the queue, so
    # no other Job can take the predecessor's resources between the two.
    takes_over: str | None = None


class Lease(Model):
    job_id: str
    holder: str
    resources: Resources
    granted_at: datetime
    # The Job confirmed its engine job runs: its use now shows in the engine's own free capacity.
    confirmed: bool = False
    # The predecessor's lease this one took over; it goes back if this Job ends before it ever ran.
    taken_from: Lease | None = None


class Ledger(Model):
    target: str
    capacity: Resources = Field(default_factory=dict)
    leases: dict[str, Lease] = Field(default_factory=dict)
    queue: list[Ask] = Field(default_factory=list)
    # Predecessor leases handed to a queued successor's ask, until it is granted.
    handovers: dict[str, Lease] = Field(default_factory=dict)

    def used(self) -> Resources:
        """What is held. A lease taken over from a predecessor keeps the predecessor's resources counted
        until the successor's engine job runs (they go back to the predecessor if it never does), and a
        predecessor's lease handed to a successor still waiting counts as held too."""
        used: Resources = {key: 0 for key in self.capacity}
        held = [_held(lease) for lease in self.leases.values()] + [h.resources for h in self.handovers.values()]
        for resources in held:
            for key, amount in resources.items():
                used[key] = used.get(key, 0) + amount
        return used

    def free(self) -> Resources:
        used = self.used()
        return {key: self.capacity[key] - used.get(key, 0) for key in self.capacity}

    def never_fits(self, resources: Resources) -> str | None:
        """Why an ask can never be granted on this target, or None."""
        for key, amount in resources.items():
            if amount > self.capacity.get(key, 0):
                return (
                    f"needs {amount} {key} but Deployment Target {self.target} has {self.capacity.get(key, 0)} in all"
                )
        return None

    def ask(self, ask: Ask) -> None:
        """Queue an ask; asking again (a retried activity, a replayed signal) changes nothing."""
        if ask.job_id in self.leases or any(a.job_id == ask.job_id for a in self.queue):
            return
        previous = self.leases.pop(ask.takes_over, None) if ask.takes_over else None
        if previous is not None:
            self.handovers[ask.job_id] = previous
            self.queue.insert(0, ask)
        else:
            self.queue.append(ask)

    def release(self, job_id: str) -> Resources:
        """Drop the Job's lease or queued ask. Returns what it held (empty if it only waited)."""
        self.queue = [a for a in self.queue if a.job_id != job_id]
        lease = self.leases.pop(job_id, None)
        # A successor that ends before its engine job ever ran gives its predecessor's lease back (an
        # update that could not launch leaves the predecessor running, and holding what it uses).
        previous = self.handovers.pop(job_id, None) or (lease.taken_from if lease and not lease.confirmed else None)
        if previous is not None:
            self.leases[previous.job_id] = previous
        return dict(lease.resources) if lease else {}

    def confirm(self, job_id: str) -> None:
        """The Job's engine job runs: its use shows in the engine's free capacity, and a lease it took
        over from its predecessor is its own for good."""
        if job_id in self.leases:
            self.leases[job_id].confirmed = True
            self.leases[job_id].taken_from = None

    def grantable(self, engine_free: Resources | None = None) -> list[Ask]:
        """The asks at the head of the queue that fit now, in order; stops at the first that does not.

        `engine_free` is what the engine itself reports free (a shared cluster may run jobs outside
        jobctl); leases granted but not yet confirmed running are not in that figure yet, so they are
        taken off it too.
        """
        free = self.free()
        if engine_free is not None:
            pending: Resources = {}
            for lease in self.leases.values():
                if not lease.confirmed:
                    for key, amount in lease.resources.items():
                        pending[key] = pending.get(key, 0) + amount
            for key, amount in engine_free.items():
                if key in free:
                    free[key] = min(free[key], amount - pending.get(key, 0))
        granted: list[Ask] = []
        for ask in self.queue:
            # A successor may use what its predecessor handed over, on top of what is free.
            handed = self.handovers[ask.job_id].resources if ask.job_id in self.handovers else {}
            if any(ask.resources.get(key, 0) > free.get(key, 0) + handed.get(key, 0) for key in ask.resources):
                break
            for key, amount in ask.resources.items():
                free[key] = free.get(key, 0) - max(0, amount - handed.get(key, 0))
            granted.append(ask)
        return granted

    def grant(self, ask: Ask, now: datetime) -> Lease:
        self.queue = [a for a in self.queue if a.job_id != ask.job_id]
        lease = Lease(
            job_id=ask.job_id,
            holder=ask.holder,
            resources=dict(ask.resources),
            granted_at=now,
            taken_from=self.handovers.pop(ask.job_id, None),
        )
        self.leases[ask.job_id] = lease
        return lease

    def position(self, job_id: str) -> int | None:
        """How many asks wait ahead of this Job's ask (None if it is not queued)."""
        for index, ask in enumerate(self.queue):
            if ask.job_id == job_id:
                return index
        return None

    def holders(self) -> list[str]:
        return [lease.holder for lease in self.leases.values()] + [ask.holder for ask in self.queue]

    def drop_holders(self, closed: set[str]) -> list[str]:
        """Reclaim everything held or asked for by workflows that are closed. Returns their Job ids."""
        gone: list[str] = []
        # Releasing a successor can give its predecessor's lease back: repeat until nothing of a closed
        # holder is left.
        while True:
            found = [lease.job_id for lease in self.leases.values() if lease.holder in closed]
            found += [ask.job_id for ask in self.queue if ask.holder in closed]
            if not found:
                return gone
            for job_id in found:
                self.release(job_id)
            gone += found


def _held(lease: Lease) -> Resources:
    if lease.taken_from is None:
        return lease.resources
    keys = set(lease.resources) | set(lease.taken_from.resources)
    return {k: max(lease.resources.get(k, 0), lease.taken_from.resources.get(k, 0)) for k in keys}


def describe(resources: Resources) -> str:
    return ", ".join(f"{amount} {key}" for key, amount in sorted(resources.items())) or "nothing"
