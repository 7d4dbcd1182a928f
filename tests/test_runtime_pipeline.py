"""The runtime's layer split over pipeline stages and virtual chunks, and recompute placement."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from planner.runtime.pipeline import (chunk_sizes, stage_recompute_sets,  # noqa: E402
                                      virtual_stage_layers)
from planner.strategy import StageLayers  # noqa: E402


def test_chunks_split_a_stage_evenly_larger_first():
    assert chunk_sizes(5, 2) == [3, 2]
    assert chunk_sizes(4, 1) == [4]


def test_virtual_stages_follow_megatron_interleaved_order():
    stages = [StageLayers(3), StageLayers(5)]
    assert virtual_stage_layers(stages, 2) == [[0, 1], [2, 3, 4], [5], [6, 7]]
    assert virtual_stage_layers(stages, 1) == [[0, 1, 2], [3, 4, 5, 6, 7]]


def test_recompute_takes_the_stage_layers_in_order():
    stages = [StageLayers(3), StageLayers(5, full=2, selective=1)]
    virtual = virtual_stage_layers(stages, 2)
    full, selective = stage_recompute_sets(stages, virtual, 1, 2)
    assert full == {"2", "3"} and selective == {"4"}
    assert stage_recompute_sets(stages, virtual, 0, 2) == (set(), set())
