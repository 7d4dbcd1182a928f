"""Mixture-of-experts MLP with expert (and expert tensor) parallelism over all-to-all (any
backend, gloo included).

Layout as in `cost_models.moe` (Megatron-Core's MoE layer with its all-to-all token dispatcher):
a router (linear h -> E, softmax, top-k, the k weights renormalised to sum to 1 as in Mixtral),
k routed experts per token (each a SwiGLU or GELU MLP of width `expert_ffn_hidden`) and an
optional shared expert every token passes through. Routing is dropless: every token-expert pair
is computed, whatever the load. Under tensor parallelism (always with sequence parallelism) each
TP rank routes its own sequence shard; the router is replicated (its gradient summed over tp)
and the shared expert is tensor-parallel like a dense MLP (`parallelize.apply_tensor_parallel`).

Expert parallelism: the `ep` ranks of an expert-parallel group each hold E/ep experts (global
expert e lives on rank e // (E/ep)). A rank sorts its token-expert pairs by expert, exchanges the
per-expert counts (one all-to-all of E integers), sends each row to the expert's owner
(all-to-all with those variable split sizes), runs its local experts and returns the rows by the
inverse exchange (combine); the backward repeats both exchanges with the splits swapped
(GShard, Lepikhin et al. 2020 §2.2). With ep = 1 the same code runs every expert locally, which
is the single-process reference.

Expert tensor parallelism (Megatron-Core `--expert-tensor-parallel-size`): each local expert's
FFN is split over the `etp` ranks of an etp group (w1/w3 by output rows, w2 by input columns;
a w2 bias lives on etp rank 0). After the dispatch the etp ranks all-gather their received rows,
each computes its FFN slice on all of them, and a reduce-scatter sums the partial outputs and
returns every rank its own rows before the combine.

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


def gather_rows(rows: torch.Tensor, sizes: list[int], group: dist.ProcessGroup) -> torch.Tensor:
    """All-gather of a variable number of rows (`sizes[r]` from rank r), concatenated in rank
    order. Its gradient is the reduce-scatter: each rank gets the sum of its rows' gradients."""
    n = len(sizes)
    return all_to_all_rows(rows.repeat(n, 1), sizes, [rows.shape[0]] * n, group)


def reduce_scatter_rows(rows: torch.Tensor, sizes: list[int], group: dist.ProcessGroup) -> torch.Tensor:
    """The inverse of `gather_rows`: `rows` holds partial values for every rank's rows (in rank
    order); each rank gets the sum over the group of the partials of its own `sizes[me]` rows."""
    n, mine = len(sizes), sizes[dist.get_rank(group)]
    parts = all_to_all_rows(rows, [mine] * n, sizes, group)
    return parts.view(n, mine, *rows.shape[1:]).sum(dim=0)


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
        self.ep_group: dist.ProcessGroup | None = None
        self.etp_group: dist.ProcessGroup | None = None
        self.ep = self.etp = 1

    def localize(self, ep_group: dist.ProcessGroup | None, etp_group: dist.ProcessGroup | None) -> None:
        """Keep only the experts this rank of the expert-parallel group owns, and only this
        rank's slice of each over the expert tensor-parallel group (None: size one)."""
        if ep_group is not None:
            self.ep_group, self.ep = ep_group, dist.get_world_size(ep_group)
            per_rank = self.n_experts // self.ep
            first = dist.get_rank(ep_group) * per_rank
            for e in range(self.n_experts):
                if not first <= e < first + per_rank:
                    del self.experts[str(e)]
        if etp_group is not None:
            self.etp_group, self.etp = etp_group, dist.get_world_size(etp_group)
            for expert in self.experts.values():
                _shard_expert(expert, dist.get_rank(etp_group), self.etp)

    def expert_slice(self, name: str) -> tuple[int, int, int] | None:
        """(dim, index, parts) of the etp slice that parameter `name` of `self.experts` (e.g.
        `5.w1.weight`) holds of the full tensor, or None when it holds the whole tensor."""
        linear, kind = name.split(".")[-2:]
        if self.etp_group is None or (linear == "w2" and kind == "bias"):
            return None
        return (1 if linear == "w2" and kind == "weight" else 0), dist.get_rank(self.etp_group), self.etp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        logits = self.router(x).reshape(-1, self.n_experts)
        probs = F.softmax(logits, dim=-1, dtype=torch.float32)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(tokens.dtype)
        flat = chosen.flatten()
        order = flat.argsort(stable=True)          # token-expert pairs grouped by expert
        token_of = order // self.top_k
        counts = torch.bincount(flat, minlength=self.n_experts)
        rows = self._dispatch_and_run(tokens[token_of], counts)
        rows = rows * weights.flatten()[order].unsqueeze(-1)
        out = torch.zeros_like(tokens).index_add(0, token_of, rows).view_as(x)
        if self.shared is not None:
            out = out + self.shared(x)
        return out

    def _dispatch_and_run(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert outputs for `rows` (sorted by global expert, `counts` rows per expert)."""
        if self.ep_group is None and self.etp_group is None:
            return self._run_local(rows, counts)
        local = self.n_experts // self.ep
        arrived, blocks = rows, counts.view(-1, local)  # rows per [source rank, local expert]
        if self.ep_group is not None:
            received = torch.empty_like(counts)
            dist.all_to_all_single(received, counts, group=self.ep_group)  # E/ep counts to each owner
            blocks = received.view(self.ep, local)
            send_splits = counts.view(self.ep, local).sum(dim=1).tolist()
            recv_splits = blocks.sum(dim=1).tolist()
            arrived = all_to_all_rows(rows, recv_splits, send_splits, self.ep_group)
        if self.etp_group is not None:
            peers = [torch.empty_like(blocks) for _ in range(self.etp)]
            dist.all_gather(peers, blocks.contiguous(), group=self.etp_group)
            sizes = [int(b.sum()) for b in peers]
            arrived = gather_rows(arrived, sizes, self.etp_group)
            blocks = torch.cat(peers)
        expert_of = torch.arange(local, device=counts.device).repeat(blocks.shape[0])
        by_expert = expert_of.repeat_interleave(blocks.flatten()).argsort(stable=True)
        done = self._run_local(arrived[by_expert], blocks.sum(dim=0))
        done = done[by_expert.argsort()]                              # back to arrival order
        if self.etp_group is not None:
            done = reduce_scatter_rows(done, sizes, self.etp_group)
        if self.ep_group is not None:
            done = all_to_all_rows(done, send_splits, recv_splits, self.ep_group)
        return done

    def _run_local(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Each local expert (in global order) on its consecutive chunk of `rows`."""
        chunks = rows.split(counts.tolist())
        return torch.cat([expert(chunk) for expert, chunk in zip(self.experts.values(), chunks)])


def _shard_expert(mlp: nn.Module, rank: int, parts: int) -> None:
    """Keep slice `rank` of `parts` of an expert MLP: w1 and w3 by output rows (column-parallel),
    w2 by input columns (row-parallel), its bias on rank 0 only (added once to the sum)."""
    def keep(linear: nn.Linear, name: str, dim: int) -> None:
        full = getattr(linear, name)
        if full is not None:
            setattr(linear, name, nn.Parameter(full.detach().chunk(parts, dim)[rank].clone()))

    for linear in (mlp.w1, mlp.w3):
        if linear is not None:
            keep(linear, "weight", 0)
            keep(linear, "bias", 0)
    keep(mlp.w2, "weight", 1)
    if rank != 0:
        mlp.w2.bias = None


def expert_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every routed-expert weight in `model`."""
    return [(name, p) for name, p in model.named_parameters() if ".experts." in name]


def reduce_expert_grads(modules: list[nn.Module], expert_dp_group: dist.ProcessGroup | None,
                        dp: int) -> None:
    """Average routed-expert gradients as DDP averages the dense ones.

    An expert's owner receives, through the combine's backward (and the etp reduce-scatter's),
    the gradient of every token its ep*etp ranks routed to it; the global loss is the mean of the
    dp ranks' local losses (TP ranks share theirs and each holds a sequence shard). So the expert
    gradient is summed over the expert data-parallel replicas (ranks holding the same expert
    slice) and divided by dp (Megatron-Core scales expert gradients the same way)."""
    for module in modules:
        for _, p in expert_parameters(module):
            if p.grad is None:
                continue
            if expert_dp_group is not None:
                dist.all_reduce(p.grad, group=expert_dp_group)
            p.grad.div_(dp)
