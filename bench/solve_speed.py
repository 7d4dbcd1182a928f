"""Solve speed: fmplan's search on the issue's cases, against the previous code and as it scales.

Three tables, each figure from whole `search()` runs (the code behind `fmplan solve`):
- default: per case, wall and CPU seconds, candidates, how they were pruned, ILPs, the plan, and
  the speed-up over enumerating the same outer space through `estimate()` (candidates x mean
  `estimate()` time over a random sample of them; even split, no recompute, so a *lower* bound
  of enumeration: the real space also has every per-stage split and recompute assignment);
- `--baseline PATH`: the same cases solved by the source tree at PATH (e.g. a git worktree of
  the previous commit) and by this tree, alternately, each run in its own process; medians of
  `--repeat` runs, their ratio, whether both found the same plan (strategy and step time) and
  whether both certified it optimal;
- `--scaling`: solve time, peak memory (RSS of the solving process) and candidates as the
  cluster grows 8 -> 65,536 GPUs for a dense and an MoE model, and as the layers grow.
Run: `PYTHONPATH=. python bench/solve_speed.py [--baseline ../speed-base] [--repeat 3]
[--scaling] [--case MODEL] [--time-limit S]`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = [("llama3-8b", "dgx-h100-1n"), ("llama3-70b", "dgx-h100-128n"),
         ("gpt3-175b", "dgx-a100-128n"), ("llama3-405b", "dgx-h100-2048n"),
         # Mixture-of-experts models (ep, etp searched with the rest): Mixtral on 64 H100s,
         # DeepSeek-V3 on 2,048 H800s (its published cluster size), Llama 4 Maverick (dense and
         # MoE blocks alternating) on 256 H100s.
         ("mixtral-8x7b", "dgx-h100-8n"), ("deepseek-v3", "hgx-h800-256n"),
         ("llama4-maverick", "dgx-h100-32n")]
SCALING_NODES = (1, 8, 64, 512, 4096, 8192)
"""DGX H100 nodes of 8 GPUs: 8 -> 65,536 GPUs."""
SCALING_MODELS = ("llama3-70b", "mixtral-8x7b")
SCALING_LAYERS = (32, 64, 128, 256)
"""Llama-3-8B's block with this many layers, on 64 H100s."""


def solve_once(model_name: str, cluster_name: str, time_limit_s: float,
               layers: int | None = None) -> dict:
    """One search in this process: wall/CPU seconds, peak RSS, statistics and the plan."""
    import resource

    from cost_models.hardware import from_cluster
    from planner.loading import load_cluster, load_model
    from planner.search import SearchOptions, search
    from planner.targets import ANY

    model, cluster = load_model(model_name), load_cluster(cluster_name)
    if layers is not None:
        model = replace(model, arch=replace(model.arch, layers=layers))
    hw = from_cluster(cluster)
    wall, cpu = time.perf_counter(), time.process_time()
    result = search(model, cluster, hw, SearchOptions(limits=ANY, time_limit_s=time_limit_s))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    best = result.best
    return {"wall_s": wall, "cpu_s": cpu, "gpus": cluster.gpus, "status": result.status,
            "gap": result.gap, "stats": result.stats.to_dict(with_wall=False),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "plan": best.strategy.describe() if best else None,
            "split": list(best.strategy.stage_layers or ()) if best else None,
            "step_s": best.cost.step_time_s if best else None,
            "mfu": best.cost.mfu if best else None,
            "peak_gib": best.cost.peak_memory_bytes / 2**30 if best else None}


def run_in_tree(tree: Path, model_name: str, cluster_name: str, time_limit_s: float,
                layers: int | None = None) -> dict:
    """`solve_once` in a fresh process importing fmplan from `tree` (this file's worker mode)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", model_name, cluster_name,
           "--time-limit", str(time_limit_s)]
    if layers is not None:
        cmd += ["--layers", str(layers)]
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker in {tree} failed on {model_name}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_plan(old: dict, new: dict) -> bool:
    """Same strategy (degrees, split) and the same step time (to 1e-9 relative)."""
    if old["plan"] is None or new["plan"] is None:
        return old["plan"] == new["plan"]
    return (old["plan"], old["split"]) == (new["plan"], new["split"]) and \
        abs(old["step_s"] - new["step_s"]) <= 1e-9 * abs(old["step_s"])


def compare(cases, baseline: Path, repeat: int, time_limit_s: float, tree: Path = ROOT) -> list[dict]:
    """Per case: the old tree's and this tree's runs, alternating (old, new, old, new ...)."""
    rows = []
    for model_name, cluster_name in cases:
        old, new = [], []
        for _ in range(repeat):
            old.append(run_in_tree(baseline, model_name, cluster_name, time_limit_s))
            new.append(run_in_tree(tree, model_name, cluster_name, time_limit_s))
        old_s = statistics.median(r["wall_s"] for r in old)
        new_s = statistics.median(r["wall_s"] for r in new)
        rows.append({"case": f"{model_name} on {cluster_name}", "gpus": new[0]["gpus"],
                     "candidates": new[0]["stats"]["candidates"], "old_s": old_s, "new_s": new_s,
                     "ratio": old_s / new_s if new_s > 0 else float("inf"),
                     "same_plan": all(same_plan(o, n) for o, n in zip(old, new)),
                     "old_status": old[0]["status"], "new_status": new[0]["status"],
                     "old_ilps": old[0]["stats"]["ilps_solved"],
                     "new_ilps": new[0]["stats"]["ilps_solved"], "plan": new[0]["plan"],
                     "step_s": new[0]["step_s"]})
    return rows


def print_comparison(rows: list[dict], baseline: Path, repeat: int) -> None:
    print(f"{'case':34} {'GPUs':>6} {'candidates':>11} {'old s':>7} {'new s':>7} {'ratio':>6} "
          f"{'same plan':>9} {'certified':>15} {'ILPs':>9}  plan")
    for r in rows:
        certified = f"{_short(r['old_status'])}/{_short(r['new_status'])}"
        print(f"{r['case']:34} {r['gpus']:6,} {r['candidates']:11,} {r['old_s']:7.2f} "
              f"{r['new_s']:7.2f} {r['ratio']:5.2f}x {'yes' if r['same_plan'] else 'NO':>9} "
              f"{certified:>15} {r['old_ilps']:4}/{r['new_ilps']:<4}  {r['plan']} "
              f"(step {r['step_s']:.4f} s)", flush=True)
    print(f"old = {baseline}, new = {ROOT}; median wall seconds of {repeat} runs each, old and new "
          "alternating, one process per run; certified and ILPs: old/new.")


def _short(status: str) -> str:
    return "optimal" if status == "optimal" else status


def scaling(time_limit_s: float, tree: Path = ROOT, nodes=SCALING_NODES, models=SCALING_MODELS,
            layer_counts=SCALING_LAYERS, layers_case=("llama3-8b", "dgx-h100-8n")) -> list[dict]:
    """Rows of solve time, peak RSS and candidates as GPUs grow, then as layers grow."""
    rows = []
    for model_name in models:
        for n in nodes:
            rows.append({"model": model_name, "layers": None, "cluster": f"dgx-h100-{n}n",
                         **run_in_tree(tree, model_name, f"dgx-h100-{n}n", time_limit_s)})
    for layers in layer_counts:
        rows.append({"model": layers_case[0], "layers": layers, "cluster": layers_case[1],
                     **run_in_tree(tree, *layers_case, time_limit_s, layers)})
    return rows


def print_scaling(rows: list[dict]) -> None:
    print(f"{'model':16} {'layers':>6} {'GPUs':>7} {'candidates':>12} {'ILPs':>5} {'wall s':>7} "
          f"{'cpu s':>6} {'RSS MiB':>8} {'result':>10}")
    for r in rows:
        layers = r["layers"] or "-"
        result = r["status"] if r["status"] != "gap" else f"gap {100 * r['gap']:.1f}%"
        print(f"{r['model']:16} {layers:>6} {r['gpus']:7,} {r['stats']['candidates']:12,} "
              f"{r['stats']['ilps_solved']:5} {r['wall_s']:7.2f} {r['cpu_s']:6.2f} "
              f"{r['rss_mib']:8.0f} {result:>10}", flush=True)
    print("RSS: peak resident memory of the solving process (Python and the model included).")


def _sample_candidates(model, cluster, hw, count: int):
    """`count` outer candidates drawn uniformly (with replacement) from the search space without
    listing it (DeepSeek-V3 on 2,048 GPUs has 28M): a family with probability proportional to
    its candidates, then one of its vpp groups (all the same size) and one of that group's
    members."""
    from planner.cache import Cache
    from planner.candidates import Group, SearchOptions, families, member_strategies
    from planner.targets import ANY

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
    from cost_models.estimate import estimate

    times = []
    layers = model.arch.layers
    for st in _sample_candidates(model, cluster, hw, sample):
        base, extra = divmod(layers, st.pp)
        st = st.with_(stage_layers=tuple(base + (i < extra) for i in range(st.pp)))
        start = time.perf_counter()
        estimate(model, cluster, st, hw)
        times.append(time.perf_counter() - start)
    return statistics.mean(times)


def print_enumeration(cases, time_limit_s: float, sample: int) -> None:
    """The default table (this tree, in this process)."""
    from cost_models.hardware import from_cluster
    from planner.loading import load_cluster, load_model

    print(f"{'case':34} {'wall s':>7} {'cpu s':>6} {'candidates':>10} {'by bound':>9} "
          f"{'by memory':>9} {'ILPs':>5} {'result':>12} {'enum s (est)':>12} {'speed-up':>8}  plan")
    for model_name, cluster_name in cases:
        run = solve_once(model_name, cluster_name, time_limit_s)
        model, cluster = load_model(model_name), load_cluster(cluster_name)
        s = run["stats"]
        enum_s = _estimate_s_per_candidate(model, cluster, from_cluster(cluster), sample) * s["candidates"]
        status = "optimal" if run["status"] == "optimal" else f"gap {100 * run['gap']:.2f}%"
        plan = (f"{run['plan']} | MFU {100 * run['mfu']:.1f}% | {run['peak_gib']:.1f} GiB | "
                f"step {run['step_s']:.3f} s" if run["plan"] else "none fits")
        print(f"{model_name + ' on ' + cluster_name:34} {run['wall_s']:7.2f} {run['cpu_s']:6.2f} "
              f"{s['candidates']:10,} {s['pruned_by_bound']:9,} {s['pruned_by_memory']:9,} "
              f"{s['ilps_solved']:5} {status:>12} {enum_s:12.1f} {enum_s / run['wall_s']:7.1f}x  {plan}",
              flush=True)
    print(f"enum s: candidates x mean estimate() time over {sample} sampled candidates "
          "(even split, no recompute; the full split/recompute space is far larger); "
          "speed-up = enum s / wall s; cpu s = this process's CPU time (wall s includes waiting "
          "for the CPU on a shared machine).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=300.0)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--case", action="append", default=None,
                        help="only this model (repeatable), e.g. --case deepseek-v3")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="source tree of the previous code to compare with (e.g. a worktree)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tree and case (--baseline)")
    parser.add_argument("--scaling", action="store_true", help="print the scaling tables")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "CLUSTER"), help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(solve_once(*args.worker, args.time_limit, args.layers)))
        return
    cases = [c for c in CASES if not args.case or c[0] in args.case]
    if args.baseline is not None:
        print_comparison(compare(cases, args.baseline.resolve(), args.repeat, args.time_limit),
                         args.baseline.resolve(), args.repeat)
    elif not args.scaling:
        print_enumeration(cases, args.time_limit, args.sample)
    if args.scaling:
        print_scaling(scaling(args.time_limit))


if __name__ == "__main__":
    main()
