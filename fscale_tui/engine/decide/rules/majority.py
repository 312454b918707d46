"""``majority``: one member, one vote (signals ``agreement`` and ``votes``: every ballot weighs
1, so a stage's confidence is the leader's share of the votes). What ``scale -k N`` uses."""

from __future__ import annotations

from . import VotingRule, register


@register("majority", signals=("agreement", "votes"))
class Majority(VotingRule):
    """One member, one vote."""

    order = 10
