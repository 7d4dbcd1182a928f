"""DeepSpeed emitter: ds_config.json is accepted by DeepSpeed's own DeepSpeedConfig (deepspeed
0.19.8) with the plan's data-parallel size, and its batch, precision, ZeRO and offload settings
are the plan's."""
from __future__ import annotations

import json

import pytest

from emit_cases import check_golden, dry_run, plan
from engine_parsers import deepspeed_config
from planner.emit import check, emit
from planner.errors import InputError
from planner.plan import Plan

CASES = ["gpt-dense", "gpt-pp", "gpt-pp-fp16", "zero3-offload", "llama-zero2"]


def _plan(case):
    if case == "llama-zero2":  # ZeRO-2 with optimizer offload on pure data parallelism
        base = plan("zero3-offload")
        return base.__class__(model=base.model, cluster=base.cluster, strategy=base.strategy.with_(
            zero=2, offload_params=False, recompute="none"))
    return plan(case)


@pytest.mark.parametrize("case", CASES)
def test_deepspeed_accepts_emitted_config(tmp_path, case):
    p = _plan(case)
    st, train = p.strategy, p.model.training
    files = emit(p, "deepspeed", tmp_path)
    config = deepspeed_config(json.loads((tmp_path / "ds_config.json").read_text()), dp=st.dp)
    assert config.world_size == st.dp
    assert (config.train_batch_size, config.train_micro_batch_size_per_gpu,
            config.gradient_accumulation_steps) == (train.global_batch, st.mbs,
                                                    st.micro_batches(p.model))
    assert config.zero_optimization_stage == st.zero
    assert config.bfloat16_config.enabled == (train.precision == "bf16")
    assert config.float16_config.enabled == (train.precision == "fp16")
    offload_opt = config.zero_config.offload_optimizer
    offload_param = config.zero_config.offload_param
    assert (offload_opt is not None and offload_opt.device == "cpu") == st.offload_optimizer
    assert (offload_param is not None and offload_param.device == "cpu") == st.offload_params
    if st.pp > 1:
        assert config.pipeline["stages"] == st.pp
    argv = dry_run(tmp_path / "deepspeed.sh", {"TRAIN_SCRIPT": "/work/train.py"})
    assert argv[argv.index("/work/train.py") + 1:] == [
        "--deepspeed", "--deepspeed_config", str(tmp_path / "ds_config.json")]
    check_golden(files, "deepspeed", case)


def test_deepspeed_config_rejects_inconsistent_batch():
    """The parser is live: a batch that is not micro x accumulation x dp is refused."""
    with pytest.raises(AssertionError, match="train_batch_size is not equal"):
        deepspeed_config({"train_batch_size": 65, "train_micro_batch_size_per_gpu": 2,
                          "gradient_accumulation_steps": 4}, dp=8)


def test_deepspeed_rejects_what_it_cannot_express(tmp_path):
    with pytest.raises(InputError) as err:
        emit(plan("pp-any-split"), "deepspeed", tmp_path)
    message = str(err.value)
    for what in ("tensor parallelism", "sequence parallelism", "evenly",
                 "ZeRO stage 3 with pipeline parallelism"):
        assert what in message, message


def test_deepspeed_rejects_moe_models_and_expert_parallelism(tmp_path):
    """DeepSpeed-MoE lives in the model code (deepspeed.moe.layer.MoE), not in ds_config: MoE
    plans are refused, naming the model kind and each expert degree."""
    with pytest.raises(InputError) as err:
        emit(plan("moe-deepseek-ep-etp"), "deepspeed", tmp_path)
    message = str(err.value)
    for what in ("mixture-of-experts models", "expert parallelism (ep=16)",
                 "expert tensor parallelism (etp=2)"):
        assert what in message, message
    mixtral = plan("moe-mixtral-ep")
    data_parallel = mixtral.strategy.with_(dp=64, tp=1, pp=1, sp=False, ep=1, etp=1,
                                           stage_layers=None)
    data_parallel.validate(mixtral.model, mixtral.cluster)
    with pytest.raises(InputError, match="deepspeed cannot express mixture-of-experts models"):
        check(Plan(model=mixtral.model, cluster=mixtral.cluster, strategy=data_parallel),
              "deepspeed")
    assert not list(tmp_path.iterdir())
