"""Peers' claims that they folded history this agent lacks: when to re-import, from whom.

A pull answer names the streams its peer compacted beyond the puller's vector (`folded`). Such
a gap is re-imported (`JoinImport.rebase`) only when no peer can fill it: a peer may fill it
unless it folded the stream beyond this agent's vector, or it answered since the gap was found
holding no more of the stream, or it has been out of reach for longer than `AWAY`. Until each
peer has said, the gap waits, and the peers not heard from since are asked at once.

A re-import takes its source's snapshot, which must count every event this agent folded
itself (`ledger.rebase`). So the source is a claimant whose vector covers this agent's own fold
marks; while none does, the gap waits for their next answers. Two members can each
have folded a stream the other lacks (each with a majority that shares a third member, which
holds both): each then re-imports from that third member, never from the other.

A member may speak only for itself, and a re-import takes a peer's counts for every shop, so a
claim must hold up. An honest fold needs at least one other member's acknowledgement: a peer
compacts only events that every member it counts holds, and it counts none while it is the one
cut off (`compaction.py`). So a gap claimed folded by one peer alone, while another member that
answers holds no more of the stream and folded none of it, is a claim nobody backs: the agent
does not re-import on it and says so once in the sync log (`fold_disputed`). A claim beyond the
claimant's own vector is not believed at all. With no other member to ask (a group of two, or
every other member away or gone), the one claim is taken, as the join took the master's word.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from agent.ledger import Vector, covers

__all__ = ["AWAY", "Dispute", "FoldClaims", "Judgement", "Stream"]

AWAY = 600.0  # seconds a peer is out of reach before a re-import stops waiting for it

Stream = tuple[str, str]  # (origin, epoch)


class Dispute(NamedTuple):
    """A fold claim not acted on: who made it, of which stream, up to which seq, and why."""

    peer: str
    stream: Stream
    seq: int
    why: str


@dataclasses.dataclass(frozen=True, slots=True)
class Judgement:
    """What a pull answer decided: the peer to re-import from (or None), the peers to ask
    now, and the claims newly found unbacked."""

    source: str | None = None
    ask: tuple[str, ...] = ()
    disputed: tuple[Dispute, ...] = ()


@dataclasses.dataclass(slots=True)
class FoldClaims:
    """What each peer last said it folded and held, and the gaps found from it."""

    folded_at: dict[str, Vector] = dataclasses.field(default_factory=dict)  # beyond this agent
    gaps: dict[Stream, float] = dataclasses.field(default_factory=dict)  # stream -> found when
    answers: dict[str, tuple[float, Vector]] = dataclasses.field(default_factory=dict)
    disputed: set[tuple[str, Stream]] = dataclasses.field(default_factory=set)  # said once

    def heard(
        self,
        peer: str,
        folded: Vector,
        theirs: Vector,
        mine: Vector,
        away: dict[str, float | None],
        now: float,
        kept: Vector | None = None,
    ) -> Judgement:
        """Note `peer`'s pull answer: the streams it folded (`folded`) and its vector
        (`theirs`), judged against this agent's vector now (`mine`). `away` maps every peer
        with a link to when it went out of reach (None: in reach); times are monotonic.
        `kept` is what this agent folded itself: a source must hold all of it."""
        self.answers[peer] = (now, theirs)
        disputed: list[Dispute] = []
        beyond: Vector = {}
        for stream, seq in folded.items():
            if seq <= mine.get(stream, 0):
                continue
            if seq > theirs.get(stream, 0):  # folded what it says it never held
                disputed += self._dispute(peer, stream, seq, "beyond what it says it holds")
                continue
            beyond[stream] = seq
        if beyond:
            self.folded_at[peer] = beyond
        else:
            self.folded_at.pop(peer, None)
        for stream in beyond:
            self.gaps.setdefault(stream, now)
        for stream in list(self.gaps):
            if not self._claimants(stream, mine):
                del self.gaps[stream]  # filled, or nobody says it is folded any more
        ask: set[str] = set()
        for stream, since in sorted(self.gaps.items()):
            unsure = [
                d
                for d, gone in away.items()
                if not self._cannot_fill(d, gone, stream, since, mine, now)
            ]
            if unsure:
                ask.update(d for d in unsure if d != peer)
                continue
            claimants = self._claimants(stream, mine)
            backers = [
                d
                for d, gone in away.items()
                if d not in claimants and (gone is None or now - gone <= AWAY)
            ]
            if len(claimants) == 1 and backers:  # every other member in reach holds no more
                (claimant,) = claimants
                seq = self.folded_at[claimant][stream]
                disputed += self._dispute(claimant, stream, seq, "no other member holds it")
                continue
            sources = [d for d in claimants if self._covers(d, kept or {})]
            if not sources:  # each would be refused (`ledger.StaleSnapshot`): wait for one
                continue
            source = peer if peer in sources else sorted(sources)[0]
            return Judgement(source, tuple(sorted(ask)), tuple(disputed))
        return Judgement(None, tuple(sorted(ask)), tuple(disputed))

    def forget(self) -> None:
        """After a re-import: what peers folded is judged afresh."""
        self.folded_at.clear()
        self.gaps.clear()
        self.disputed.clear()

    def _claimants(self, stream: Stream, mine: Vector) -> list[str]:
        return [d for d, f in self.folded_at.items() if f.get(stream, 0) > mine.get(stream, 0)]

    def _covers(self, domain: str, kept: Vector) -> bool:
        """Whether `domain` last said it holds every event this agent folded: only then can
        its snapshot be this agent's base."""
        answered = self.answers.get(domain)
        return answered is not None and covers(answered[1], kept)

    def _dispute(self, peer: str, stream: Stream, seq: int, why: str) -> list[Dispute]:
        if (peer, stream) in self.disputed:
            return []
        self.disputed.add((peer, stream))
        return [Dispute(peer, stream, seq, why)]

    def _cannot_fill(
        self,
        domain: str,
        gone: float | None,
        stream: Stream,
        since: float,
        mine: Vector,
        now: float,
    ) -> bool:
        if gone is not None and now - gone > AWAY:
            return True
        if self.folded_at.get(domain, {}).get(stream, 0) > mine.get(stream, 0):
            return True
        answered = self.answers.get(domain)
        return (
            answered is not None
            and answered[0] >= since
            and answered[1].get(stream, 0) <= mine.get(stream, 0)
        )
