"""`fmplan calibrate`: fit a stack's rate constants on one GPU die from measured runs."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import JsonOpt
from planner.errors import InputError


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("calibrate")(calibrate_command)


def calibrate_command(
    runs: Annotated[Path, typer.Argument(help="Measured runs (YAML list in the format of ../shared/data/published_runs_dev.yaml).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the calibration JSON (use it with --profile).")] = None,
    group: Annotated[Optional[list[str]], typer.Option("--group", help="Only runs of this group (repeatable).")] = None,
    constants: Annotated[Optional[str], typer.Option("--constants", help="Comma-separated constants to fit (default: all that the runs support).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit GEMM/attention/HBM/inter-node rate constants to your runs; print before/after and
    leave-one-group-out error per group; refuse constants the runs cannot support."""
    from cost_models.calibrate import fit, mape_pct, save
    from planner.runs import device_family, load_records, observations, to_case

    records = load_records(runs)
    if group:
        records = [r for r in records if r["group"] in group]
        if not records:
            raise InputError(f"no run of group {', '.join(group)} in the file", source=str(runs))
    keys = defaultdict(int)
    for rec in records:
        case = to_case(rec)
        keys[(case.stack.name, device_family(case))] += 1
    if len(keys) > 1:
        listing = ", ".join(f"{s} on {d} ({n} runs)" for (s, d), n in sorted(keys.items()))
        raise InputError(f"the runs span several stacks or GPUs: {listing}", source=str(runs),
                         hint="calibrate one stack and GPU at a time: select runs with --group")
    (stack, device), = keys
    obs = observations(records)
    if not obs:
        raise InputError("no run has a measured step time or throughput", source=str(runs))
    names = [c.strip() for c in constants.split(",")] if constants else None
    result = fit(obs, names)
    by_group = defaultdict(list)
    for o in obs:
        by_group[o.group].append(o)
    rows = []
    for g, part in by_group.items():
        others = [o for o in obs if o.group != g]
        logo = mape_pct(part, fit(others, names).constants) if others else None
        rows.append({"group": g, "runs": len(part), "before_mape_pct": mape_pct(part, {}),
                     "after_mape_pct": mape_pct(part, result.constants), "logo_mape_pct": logo})
    if out is not None:
        save(result, out, stack=stack, device=device)
    if as_json:
        typer.echo(json.dumps({"stack": stack, "device": device, "constants": result.constants,
                               "refused": result.refused, "groups": rows}, indent=2, sort_keys=True))
        return
    typer.echo(f"stack {stack} on {device}: {result.runs} runs")
    typer.echo(f"{'group':40} {'runs':>4} {'before %':>9} {'after %':>8} {'LOGO %':>7}")
    for r in rows:
        logo = f"{r['logo_mape_pct']:.1f}" if r["logo_mape_pct"] is not None else "-"
        typer.echo(f"{r['group']:40} {r['runs']:4d} {r['before_mape_pct']:9.1f} "
                   f"{r['after_mape_pct']:8.1f} {logo:>7}")
    typer.echo("fitted: " + (", ".join(f"{k} = {v:.4f}" for k, v in result.constants.items()) or "none"))
    for name, why in result.refused.items():
        typer.echo(f"not fitted: {name}: {why}")
    if out is not None:
        typer.echo(f"wrote {out}")
