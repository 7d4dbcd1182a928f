"""Mixture-of-experts MLP with expert parallelism over all-to-all (any backend, gloo included).

Layout as in `cost_models.moe` (Megatron-Core's MoE layer with its all-to-all token dispatcher):
a router (linear h -> E, softmax, top-k, the k weights renormalised to sum to 1 as in Mixtral),
k routed experts per token (each a SwiGLU or GELU MLP of width `expert_ffn_hidden`) and an
optional shared expert every token passes through. Routing is dropless: every token-expert pair
is computed, whatever the load.

Expert parallelism: the `ep` ranks of an expert-parallel group each hold E/ep experts (global
expert e lives on rank e // (E/ep)). A rank sorts its token-expert pairs by expert, exchanges the
per-expert counts (one all-to-all of E integers), sends each row to the expert's owner
(all-to-all with those variable split sizes), runs its local experts and returns the rows by the
inverse exchange (combine); the backward repeats both exchanges with the splits swapped
(GShard, Lepikhin et al. 2020 §2.2). With ep = 1 the same code runs every expert locally, which
is the single-process reference.

No auxiliary load-balancing loss: it would add a term the reference must reproduce exactly, and
the memory check does not depend on it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from planner.specs import Architecture


class _AllToAll(torch.autograd.Function):
    """`all_to_all_single` on rows with autograd: the gradient goes back by the inverse exchange."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, out_splits: list[int], in_splits: list[int],
                group: dist.ProcessGroup) -> torch.Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = rows.new_empty((sum(out_splits), *rows.shape[1:]))
        dist.all_to_all_single(out, rows.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out_splits, in_splits = ctx.splits
        grad_in = grad.new_empty((sum(in_splits), *grad.shape[1:]))
        dist.all_to_all_single(grad_in, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return grad_in, None, None, None


def all_to_all_rows(rows: torch.Tensor, out_splits: list[int], in_splits: list[int],
                    group: dist.ProcessGroup) -> torch.Tensor:
    """Send `in_splits[r]` consecutive rows to rank r of `group`; receive `out_splits[r]` from it."""
    return _AllToAll.apply(rows, out_splits, in_splits, group)


class MoEFeedForward(nn.Module):
    """Router, routed experts (all of them, or this rank's E/ep after `localize`) and shared expert.

    Experts sit in a ModuleDict keyed by their global index, so every rank builds all E from the
    same seed (identical weights to the reference) and then drops the ones it does not own."""

    def __init__(self, arch: Architecture, expert_mlp: type[nn.Module]) -> None:
        super().__init__()
        moe = arch.moe
        self.n_experts, self.top_k = moe.routed_experts, moe.top_k
        self.router = nn.Linear(arch.hidden, moe.routed_experts, bias=False)
        self.experts = nn.ModuleDict({str(e): expert_mlp(arch, moe.expert_ffn_hidden)
                                      for e in range(moe.routed_experts)})
        self.shared = expert_mlp(arch, moe.shared_ffn_hidden) if moe.shared_ffn_hidden else None
        self.group: dist.ProcessGroup | None = None
        self.ep = 1

    def localize(self, group: dist.ProcessGroup | None) -> None:
        """Keep only the experts this rank of the expert-parallel `group` owns (None: all)."""
        if group is None:
            return
        self.group, self.ep = group, dist.get_world_size(group)
        per_rank = self.n_experts // self.ep
        first = dist.get_rank(group) * per_rank
        for e in range(self.n_experts):
            if not first <= e < first + per_rank:
                del self.experts[str(e)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        probs = F.softmax(self.router(tokens), dim=-1, dtype=torch.float32)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(tokens.dtype)
        flat = chosen.flatten()
        order = flat.argsort(stable=True)          # token-expert pairs grouped by expert
        token_of = order // self.top_k
        counts = torch.bincount(flat, minlength=self.n_experts)
        rows = self._dispatch_and_run(tokens[token_of], counts)
        rows = rows * weights.flatten()[order].unsqueeze(-1)
        out = torch.zeros_like(tokens).index_add(0, token_of, rows)
        if self.shared is not None:
            out = out + self.shared(tokens)
        return out.view_as(x)

    def _dispatch_and_run(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert outputs for `rows` (sorted by global expert, `counts` rows per expert)."""
        if self.group is None:
            return self._run_local(rows, counts)
        ep, local = self.ep, self.n_experts // self.ep
        received = torch.empty_like(counts)
        dist.all_to_all_single(received, counts, group=self.group)  # E/ep counts to each owner
        from_rank = received.view(ep, local)                         # [source rank, local expert]
        send_splits = counts.view(ep, local).sum(dim=1).tolist()
        recv_splits = from_rank.sum(dim=1).tolist()
        arrived = all_to_all_rows(rows, recv_splits, send_splits, self.group)
        expert_of = torch.arange(local, device=counts.device).repeat(ep).repeat_interleave(from_rank.flatten())
        by_expert = expert_of.argsort(stable=True)
        done = self._run_local(arrived[by_expert], from_rank.sum(dim=0))
        done = done[by_expert.argsort()]                              # back to arrival order
        return all_to_all_rows(done, send_splits, recv_splits, self.group)

    def _run_local(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Each local expert (in global order) on its consecutive chunk of `rows`."""
        chunks = rows.split(counts.tolist())
        return torch.cat([expert(chunk) for expert, chunk in zip(self.experts.values(), chunks)])


def expert_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every routed-expert weight in `model`."""
    return [(name, p) for name, p in model.named_parameters() if ".experts." in name]


def reduce_expert_grads(model: nn.Module, expert_dp_group: dist.ProcessGroup | None, dp: int) -> None:
    """Average routed-expert gradients as DDP averages the dense ones.

    An expert's owner receives, through the combine's backward, the gradient of every ep-group
    rank's local loss; the global loss is the mean of the dp ranks' local losses. So the expert
    gradient is summed over the expert data-parallel replicas (ranks holding the same experts)
    and divided by dp (Megatron-Core scales expert gradients the same way)."""
    for _, p in expert_parameters(model):
        if p.grad is None:
            continue
        if expert_dp_group is not None:
            dist.all_reduce(p.grad, group=expert_dp_group)
        p.grad.div_(dp)
