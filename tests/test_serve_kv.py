"""KV-cache capacity against vLLM's formula evaluated by hand (Llama 3 70B, TP 8, H100 80 GB)."""
import pytest

from planner.errors import InfeasibleError, InputError
from planner.serve.kv_cache import kv_capacity

GIB = 2**30


def _llama70b_tp8(**over):
    args = dict(total_gpu_bytes=80 * GIB, gpu_memory_utilization=0.9,
                weight_bytes=int(70.6e9 * 2 / 8), activation_peak_bytes=2 * GIB,
                non_torch_bytes=1 * GIB, layers_per_gpu=80, kv_heads_per_gpu=1, head_dim=128,
                kv_dtype="bf16")
    args.update(over)
    return kv_capacity(**args)


def test_llama70b_tp8_within_5pct_of_hand_formula():
    # by hand: 0.9*80 GiB = 72 GiB; weights 17.65e9 B = 16.44 GiB; left 72-16.44-3 = 52.56 GiB.
    # per token: 2 (K,V) * 1 head * 128 * 2 B * 80 layers = 40,960 B -> 52.56 GiB / 40960 ~ 1.378 M
    hand_tokens = (0.9 * 80 * GIB - 70.6e9 * 2 / 8 - 3 * GIB) / (2 * 1 * 128 * 2 * 80)
    got = _llama70b_tp8().tokens
    assert abs(got - hand_tokens) / hand_tokens < 0.05
    assert got % 16 == 0


def test_fp8_kv_doubles_capacity():
    bf16 = _llama70b_tp8().num_blocks
    fp8 = _llama70b_tp8(kv_dtype="fp8").num_blocks
    assert fp8 in (2 * bf16, 2 * bf16 + 1)


def test_weights_over_budget_is_memory_infeasible():
    with pytest.raises(InfeasibleError, match="memory"):
        _llama70b_tp8(weight_bytes=int(70.6e9 * 2))


@pytest.mark.parametrize("over", [dict(gpu_memory_utilization=1.5), dict(kv_dtype="int3"),
                                  dict(head_dim=0)])
def test_bad_inputs_are_input_errors(over):
    with pytest.raises(InputError):
        _llama70b_tp8(**over)
