"""A 3-node Kafka cluster with two bridges, two workers and two sinks, under the faults a cluster is for.

In order: one Kafka node SIGKILLed under load and brought back (nothing
waits on it: no producer stuck, no process restarted); one frozen
(SIGSTOP) for 40 s, the one coordinating the workers' group (SQL must keep
moving, no process may exit); two Kafka nodes down at once (writes need two
in-sync copies, so the pipeline waits and the edges buffer), then back (SQL
must move again within 10 s, no process exited); one of the two bridges
SIGKILLed (the other takes its shards over: takeover time printed). At the
end every SQL aggregate equals what the cameras recorded: nothing lost,
nothing counted twice. One camera publishes on the MQTT layout from before shards, and at
the end sends what it holds on today's, as an upgraded edge would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.chaos.harness import CLUSTER_PARTS, Chaos

pytestmark = pytest.mark.chaos

FROZEN_STILL_LIMIT_S = 15.0  # the longest SQL may stand still while one node of three is frozen
QUORUM_BACK_LIMIT_S = 10.0  # two nodes back to SQL moving again


async def test_cluster_faults_are_exact(chaos_root: Path) -> None:
    chaos = Chaos(chaos_root, seed=int(os.environ.get("FLEETSIGHT_CHAOS_SEED", "11")), sim_cameras=4, rate=25.0,
                  video=False, cluster=True, legacy_cameras=1)
    report = await chaos.run(faults=len(CLUSTER_PARTS), gap_s=8, link_cut_s=0, down_s=(15, 20), parts=CLUSTER_PARTS,
                             shuffle=False)
    print(report.render())
    if os.environ.get("FLEETSIGHT_SOAK_RESULT"):  # for `make soak`
        with open(os.environ["FLEETSIGHT_SOAK_RESULT"], "w") as out:
            frozen, two = (next((f for f in report.faults if f.part == p), None) for p in ("kafka-node-frozen", "kafka-two-nodes"))
            extra = (f"frozen node: SQL still {frozen.still_s:.1f} s at most" if frozen and frozen.still_s is not None else "") + (
                f"; two nodes back: SQL moving after {two.moving_s:.1f} s" if two and two.moving_s is not None else "")
            json.dump({"failover_s": max(report.takeover_s, default=None), "lost": report.lost, "double": report.double,
                       "extra": extra}, out)
    # Every topic in three copies: ours, Faust's leader topic (made by us:
    # Faust would make it with one) and Kafka's own offsets topic.
    assert {"__consumer_offsets", "chaos.events", "chaos.agg.rows", "chaos-__assignor-__leader"} <= set(report.replicas)
    assert set(report.replicas.values()) == {3}, report.replicas
    assert [f.part for f in report.faults] == list(CLUSTER_PARTS)
    assert all(f.recovered_s is not None for f in report.faults)
    one_node, frozen, two_nodes = report.faults[:3]
    assert one_node.restarts == 0, f"a process had to be restarted after one Kafka node died\n{report.render()}"
    assert one_node.flowing_s is not None and one_node.flowing_s < one_node.down_s, report.render()
    # A frozen node is abandoned by the clients' timeouts in seconds: SQL keeps moving, nobody exits.
    assert frozen.restarts == 0, f"a process exited while a Kafka node was frozen\n{report.render()}"
    assert frozen.still_s is not None and frozen.still_s <= FROZEN_STILL_LIMIT_S, report.render()
    # Two nodes down: the pipeline waits (writes need two copies) and moves again soon after they are back.
    assert two_nodes.restarts == 0, f"a process exited while two Kafka nodes were down\n{report.render()}"
    assert two_nodes.moving_s is not None and two_nodes.moving_s <= QUORUM_BACK_LIMIT_S, report.render()
    assert report.takeover_s, "the bridge takeover was not measured"
    assert report.events > 1000
    assert report.lost == 0 and report.double == 0, report.render()
    assert report.rollups_differ == 0, report.render()
