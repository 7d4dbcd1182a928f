"""Solve speed: fmplan's search vs enumerating the same outer space through `estimate()`.

For each case (dense and mixture-of-experts models) it runs `search()` (the code behind
`fmplan solve`) and then times `estimate()` on a random sample of the same outer candidates
(drawn uniformly from the search's families of groups; even split, no recompute: one call per
candidate, so the enumeration figure is a *lower* bound: the real space also has every
per-stage split and recompute assignment). Enumeration time = candidates x mean estimate() time
(extrapolated from the sample, as printed; even split so that every vpp is valid).
Run: `PYTHONPATH=. python bench/solve_speed.py [--time-limit S] [--sample N] [--case MODEL]`.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from cost_models.estimate import estimate
from cost_models.hardware import from_cluster
from planner.loading import load_cluster, load_model
from planner.cache import Cache
from planner.candidates import Group, families, member_strategies
from planner.search import SearchOptions, search
from planner.strategy import Strategy
from planner.targets import ANY

CASES = [("llama3-8b", "dgx-h100-1n"), ("llama3-70b", "dgx-h100-128n"),
         ("llama3-405b", "dgx-h100-2048n"), ("gpt3-175b", "dgx-a100-128n"),
         # Mixture-of-experts models (ep, etp searched with the rest): Mixtral on 64 H100s,
         # DeepSeek-V3 on 2,048 H800s (its published cluster size).
         ("mixtral-8x7b", "dgx-h100-8n"), ("deepseek-v3", "hgx-h800-256n")]


def _sample_candidates(model, cluster, hw, count: int) -> list[Strategy]:
    """`count` outer candidates drawn uniformly (with replacement) from the search space without
    listing it (DeepSeek-V3 on 2,048 GPUs has 15M): a family with probability proportional to
    its candidates, then one of its vpp groups (all the same size) and one of that group's
    members."""
    options = SearchOptions(limits=ANY)
    pool = [family for _, family in families(model, cluster, Cache(model, hw, ANY), options)]
    rng = random.Random(0)
    picks = []
    for family in rng.choices(pool, weights=[f.members for f in pool], k=count):
        dp, tp, pp, cp, _, mbs, sp, ep, etp, overlap = family.degrees
        group = Group((dp, tp, pp, cp, rng.choice(family.vpps), mbs, sp, ep, etp, overlap), 0)
        picks.append(rng.choice(list(member_strategies(model, group, options))))
    return picks


def _estimate_s_per_candidate(model, cluster, hw, sample: int) -> float:
    times = []
    layers = model.arch.layers
    for st in _sample_candidates(model, cluster, hw, sample):
        base, extra = divmod(layers, st.pp)
        st = st.with_(stage_layers=tuple(base + (i < extra) for i in range(st.pp)))
        start = time.perf_counter()
        estimate(model, cluster, st, hw)
        times.append(time.perf_counter() - start)
    return statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--top", type=int, default=0, help="runners-up to prove (solve's --top)")
    parser.add_argument("--case", action="append", default=None,
                        help="only this model (repeatable), e.g. --case deepseek-v3")
    args = parser.parse_args()
    header = (f"{'case':34} {'wall s':>7} {'cpu s':>6} {'candidates':>10} {'by bound':>9} {'by memory':>9} "
              f"{'ILPs':>5} {'result':>12} {'enum s (est)':>12} {'speed-up':>8}  plan")
    print(header)
    for model_name, cluster_name in CASES:
        if args.case and model_name not in args.case:
            continue
        model, cluster = load_model(model_name), load_cluster(cluster_name)
        hw = from_cluster(cluster)
        cpu = time.process_time()
        result = search(model, cluster, hw, SearchOptions(limits=ANY, top_k=args.top,
                                                          time_limit_s=args.time_limit))
        cpu = time.process_time() - cpu
        s = result.stats
        per = _estimate_s_per_candidate(model, cluster, hw, args.sample)
        enum_s = per * s.candidates
        status = "optimal" if result.status == "optimal" else f"gap {100 * result.gap:.2f}%"
        best = result.best
        plan = (f"{best.strategy.describe()} | MFU {100 * best.cost.mfu:.1f}% | "
                f"{best.cost.peak_memory_bytes / 2**30:.1f} GiB | step {best.cost.step_time_s:.3f} s"
                if best else "none fits")
        print(f"{model_name + ' on ' + cluster_name:34} {s.wall_s:7.2f} {cpu:6.2f} {s.candidates:10,} "
              f"{s.pruned_by_bound:9,} {s.pruned_by_memory:9,} {s.ilps_solved:5} {status:>12} "
              f"{enum_s:12.1f} {enum_s / s.wall_s:7.1f}x  {plan}", flush=True)
    print(f"enum s: candidates x mean estimate() time over {args.sample} sampled candidates "
          "(even split, no recompute; the full split/recompute space is far larger); "
          "speed-up = enum s / wall s; cpu s = this process's CPU time (wall s includes waiting "
          "for the CPU on a shared machine).")


if __name__ == "__main__":
    main()
