"""Predicted vs measured on published runs, per group and stack: MAPE, signed bias,
leave-one-group-out MAPE and rank correlation.

Usage: python bench/fidelity.py [--markdown] [--rows] [--no-logo]

Runs: the dev set (../shared/data/published_runs_dev.yaml) and the repo's extra cited runs
(bench/runs/*.yaml). Every run is predicted with the shipped presets of its stack and device
(one set of constants per stack and device; `planner.runs` says how unstated settings are filled).
Leave-one-group-out (LOGO): `fmplan calibrate`'s fit on the *other* groups of the same stack and
GPU, then predict the left-out group; a group with no such peer shows its preset error.
Spearman rho of predicted vs measured throughput per GPU is printed for every (group, model) with
at least 5 configurations.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cost_models.calibrate import fit  # noqa: E402
from cost_models.hardware import from_cluster  # noqa: E402
from planner.loading import load_cluster  # noqa: E402
from planner.runs import device_family, load_records, observations, to_case  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "published_runs_dev.yaml"
EXTRA = sorted((ROOT / "bench" / "runs").glob("*.yaml"))


def all_records() -> list[tuple[dict, bool]]:
    """(record, is_dev) for the dev set (when present beside the repo) and the extra runs."""
    out = [(r, True) for r in load_records(DATA)] if DATA.is_file() else []
    for path in EXTRA:
        out += [(r, False) for r in load_records(path)]
    return out


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = sum((a - mx) ** 2 for a in rx) ** 0.5
    sy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (sx * sy) if sx and sy else 1.0


def evaluate(records: list[tuple[dict, bool]], logo: bool = True) -> dict:
    """Rows (one per run) and per-group statistics."""
    rows, obs_by_group, meta = [], defaultdict(list), {}
    for rec, dev in records:
        case = to_case(rec)
        for o in observations([rec]):
            key = (case.stack.name, device_family(case))
            obs_by_group[rec["group"]].append(o)
            meta[rec["group"]] = {"stack": key[0], "device": key[1], "dev": dev,
                                  "source": rec["source"]["title"]}
            pred = o.predict(from_cluster(load_cluster(case.cluster_name, nodes=case.nodes), case.stack))
            gpus = rec["hardware"]["num_gpus"]
            rows.append({"id": o.name, "group": o.group, "model": rec["model"]["name"],
                         "seq_len": rec["model"]["seq_len"], "predicted": pred, "measured": o.measured,
                         "error_pct": 100 * (pred / o.measured - 1), "gpus": gpus})
    groups = {}
    for g, obs in obs_by_group.items():
        errs = [r["error_pct"] for r in rows if r["group"] == g]
        groups[g] = {**meta[g], "runs": len(errs), "mape_pct": sum(map(abs, errs)) / len(errs),
                     "bias_pct": sum(errs) / len(errs), "logo_mape_pct": None, "logo_constants": None}
        peers = [o for h, other in obs_by_group.items() if h != g
                 and (meta[h]["stack"], meta[h]["device"]) == (meta[g]["stack"], meta[g]["device"])
                 for o in other]
        if logo and peers:
            constants = fit(peers).constants
            logo_errs = [100 * abs(o.predict(o.hardware.scaled(constants)) / o.measured - 1)
                         for o in obs]
            groups[g]["logo_mape_pct"] = sum(logo_errs) / len(logo_errs)
            groups[g]["logo_constants"] = constants
    return {"rows": rows, "groups": groups, "spearman": _spearman_table(rows)}


def _spearman_table(rows: list[dict]) -> list[dict]:
    by = defaultdict(list)
    for r in rows:
        by[(r["group"], r["model"])].append(r)
    out = []
    for (g, model), rs in sorted(by.items()):
        if len(rs) < 5:
            continue
        # Throughput per GPU ranks configurations; step time alone ranks batch sizes.
        tput = lambda r, v: 1.0 / (v * r["gpus"])  # noqa: E731
        rho = spearman([tput(r, r["predicted"]) for r in rs], [tput(r, r["measured"]) for r in rs])
        out.append({"group": g, "model": model, "configs": len(rs), "rho": rho})
    return out


def summary(result: dict, dev_only: bool = False) -> dict:
    """Overall MAPE, bias and LOGO MAPE over every run, or the dev set's (LOGO: preset where a
    group has no peer)."""
    groups = {g: v for g, v in result["groups"].items() if v["dev"] or not dev_only}
    rows = [r for r in result["rows"] if r["group"] in groups]
    n = len(rows)
    logo = sum((groups[g]["logo_mape_pct"] if groups[g]["logo_mape_pct"] is not None
                else groups[g]["mape_pct"]) * groups[g]["runs"] for g in groups) / n
    return {"runs": n, "mape_pct": sum(abs(r["error_pct"]) for r in rows) / n,
            "bias_pct": sum(r["error_pct"] for r in rows) / n, "logo_mape_pct": logo}


def seq_drift(rows: list[dict], group_prefixes: tuple[str, ...]) -> dict[int, float]:
    """Mean predicted/measured throughput ratio by sequence length for groups of those prefixes."""
    by = defaultdict(list)
    for r in rows:
        if r["group"].startswith(group_prefixes):
            by[r["seq_len"]].append(r["measured"] / r["predicted"])
    return {s: sum(v) / len(v) for s, v in sorted(by.items())}


def _fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def main() -> None:
    result = evaluate(all_records(), logo="--no-logo" not in sys.argv)
    groups, s = result["groups"], summary(result)
    if "--rows" in sys.argv:
        for r in result["rows"]:
            print(f"{r['id']:52} {r['predicted']:10.4f} {r['measured']:10.4f} {r['error_pct']:+7.1f}")
    if "--markdown" in sys.argv:
        print("| group | set | stack | GPU | runs | MAPE % | bias % | LOGO MAPE % | source |")
        print("|---|---|---|---|---:|---:|---:|---:|---|")
        for g, v in groups.items():
            print(f"| {g} | {'dev' if v['dev'] else 'check'} | {v['stack']} | {v['device']} | {v['runs']} | "
                  f"{v['mape_pct']:.1f} | {v['bias_pct']:+.1f} | {_fmt(v['logo_mape_pct'])} | {v['source']} |")
        for label, t in (("dev set", summary(result, dev_only=True)), ("all", s)):
            print(f"| **{label}** | | | | {t['runs']} | {t['mape_pct']:.1f} | {t['bias_pct']:+.1f} | "
                  f"{t['logo_mape_pct']:.1f} | |")
        return
    print(f"{'group':36} {'stack':18} {'GPU':5} {'runs':>4} {'MAPE%':>6} {'bias%':>6} {'LOGO%':>6}  LOGO constants")
    for g, v in groups.items():
        print(f"{g:36} {v['stack']:18} {v['device']:5} {v['runs']:4d} {v['mape_pct']:6.1f} "
              f"{v['bias_pct']:+6.1f} {_fmt(v['logo_mape_pct']):>6}  {v['logo_constants'] or ''}")
    for label, t in (("dev set", summary(result, dev_only=True)), ("all", s)):
        print(f"{label:36} {'':18} {'':5} {t['runs']:4d} {t['mape_pct']:6.1f} {t['bias_pct']:+6.1f} "
              f"{t['logo_mape_pct']:6.1f}")
    print("\nSpearman rho, predicted vs measured throughput per GPU (>= 5 configs of one model):")
    for r in result["spearman"]:
        print(f"  {r['group']:36} {r['model']:12} {r['configs']:3d} configs  rho = {r['rho']:+.2f}")
    print("\nllm-foundry predicted/measured throughput by sequence length:")
    for prefix in ("mpt_llmfoundry", "llmfoundry_a100", "llmfoundry_h100"):
        drift = seq_drift(result["rows"], (prefix,))
        print(f"  {prefix:18} " + "  ".join(f"{k}:{v:.2f}" for k, v in drift.items()))


if __name__ == "__main__":
    main()
