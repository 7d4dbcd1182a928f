"""The single-process reference: the same model, data and optimizer without any parallelism.

A parallel run is right when its per-step losses match these within float tolerance (the sum
over micro-batches and ranks only reorders floating-point additions).
"""
from __future__ import annotations

import torch

from planner.runtime.model import build_decoder, loss_fn, synthetic_batch
from planner.runtime.parallelize import LEARNING_RATE
from planner.specs import ModelSpec


def reference_losses(model: ModelSpec, steps: int, *, tp: int = 1, seed: int = 0) -> list[float]:
    """Losses of `steps` full-batch Adam steps on one process (fp32, CPU). `tp` only sets the
    vocabulary padding (to a multiple of 128 * tp, as the parallel run pads it)."""
    return reference_run(model, steps, tp=tp, seed=seed)[0]


def reference_run(model: ModelSpec, steps: int, *, tp: int = 1, pp: int = 1, seed: int = 0
                  ) -> tuple[list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`reference_losses`, the final parameters and the last step's gradients, by name. `pp` > 1
    only unties the embeddings, as a pipeline-parallel run does (`build_decoder`)."""
    train = model.training
    net = build_decoder(model.arch, train.seq_len, tp=tp, pp=pp, seed=seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, foreach=False)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        inputs, labels = synthetic_batch(model.arch.vocab, train.global_batch, train.seq_len, step, seed)
        loss = loss_fn(net(inputs), labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    params = dict(net.named_parameters())
    return (losses, {name: p.detach().clone() for name, p in params.items()},
            {name: p.grad.clone() for name, p in params.items()})
