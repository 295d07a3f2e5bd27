"""Which failures the trainer names in one line as a collective's
(pipeline/runtime/distributed.py)."""

from __future__ import annotations

from pipeline.runtime.distributed import lost_peer, timed_out

GLOO = "[/pytorch/third_party/gloo/gloo/transport/tcp/{}] {}. This is typically caused by ..."


def test_a_collectives_timeout_and_a_vanished_peer_are_named_with_what_gloo_said():
    waited = RuntimeError(
        GLOO.format(
            "unbound_buffer.cc:81", "Timed out waiting 10000ms for recv operation to complete"
        )
    )
    gone = RuntimeError(
        GLOO.format("pair.cc:545", "Read error [10.213.83.12]:39064: Connection reset by peer")
    )
    assert timed_out(waited) == "Timed out waiting 10000ms for recv operation to complete"
    assert lost_peer(gone) == "Read error [10.213.83.12]:39064: Connection reset by peer"
    assert lost_peer(waited) is None and timed_out(gone) is None


def test_other_errors_that_mention_a_timeout_are_left_alone():
    # a loader's or a file system's timeout keeps its own traceback: not a hung rank
    assert timed_out(TimeoutError("timed out waiting for the next batch")) is None
    assert timed_out(RuntimeError("DALI: reading shard-000003.tar: read timeout")) is None
    assert lost_peer(OSError("Connection reset by peer")) is None
