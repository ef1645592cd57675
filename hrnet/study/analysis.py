"""A study's results: every run folder read back (:func:`collect`) and the report dict (:func:`analyse`):
per-arm statistics, paired comparisons, Lookahead slow vs fast, sensitivity, real photos, verdicts."""
from __future__ import annotations

import datetime
import math
import os
import signal
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from configs import get_defaults, load_config
from hrnet.engine.run_record import LATEST, read_metrics
from hrnet.study import stats
from hrnet.study.real_photos import evaluate_real_hands, real_hand_sets
from hrnet.study.runner import last_error_line, read_sessions
from hrnet.study.spec import SCALE_KEYS, PlannedRun, Study, plan_runs

__all__ = ["collect", "analyse", "COMPARED_METRICS"]


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _status(run: PlannedRun, info: Mapping[str, Any], sessions: Sequence[Mapping[str, Any]]) -> Tuple[str, str]:
    """(status, reason) of a run folder: finished | diverged | failed | partial | not run."""
    status = info.get("status")
    done = info.get("epochs_completed", 0) if isinstance(info.get("epochs_completed"), int) else 0
    last_rc = sessions[-1].get("exit_status") if sessions else None
    if status == "finished" and done >= run.end_epoch:
        return "finished", ""
    if status == "diverged":
        return "diverged", last_error_line(run.run_dir)
    if last_rc not in (None, 0, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        return "failed", f"exit status {last_rc}: {last_error_line(run.run_dir)}"
    if status or os.path.isfile(os.path.join(run.run_dir, LATEST)):
        return "partial", f"{done}/{run.end_epoch} epochs"
    return "not run", ""


def collect(study: Study, out_dir: str, evaluate_real: bool = True) -> List[Dict[str, Any]]:
    """One record per planned run, read back from its folder (``metrics.json`` through
    ``hrnet.engine.run_record``, the study's session records, the cached real-hand evaluation)."""
    from hrnet.evaluation.metrics import metric_names

    sets = real_hand_sets(study.real_hands) if evaluate_real else {}
    records = []
    for run in plan_runs(study, out_dir):
        info, problems = read_metrics(run.run_dir)
        sessions = read_sessions(run.run_dir)
        status, reason = _status(run, info, sessions)
        pck_key = metric_names(load_config(run.config, list(run.opts)))[1]
        final = info.get("final", {}) if isinstance(info.get("final"), dict) else {}
        history = [h for h in info.get("history", []) if isinstance(h, dict)]
        curves = {k: [_num(h.get(k)) for h in history]
                  for k in ("train_loss", "valid_loss", "NME", "NME_slow", "NME_fast")}
        epochs = [int(h.get("epoch", i)) for i, h in enumerate(history)]
        rec: Dict[str, Any] = {
            "name": run.name, "arm": run.arm, "seed": run.seed, "status": status, "reason": reason,
            "problems": problems, "epochs_completed": info.get("epochs_completed"), "end_epoch": run.end_epoch,
            "hparams": info.get("hparams", {}),
            "final_NME": _num(info.get("final_NME")), "best_NME": _num(info.get("best_NME")),
            "best_epoch": info.get("best_epoch"), "final_valid_loss": _num(info.get("final_valid_loss")),
            "final_train_loss": _num(info.get("final_train_loss")), "pck_key": pck_key,
            "PCK": _num(final.get(pck_key)), "AUC": _num(final.get("AUC")), "EPE": _num(final.get("EPE")),
            "wall_time_s": _num(info.get("wall_time_s")),
            "epochs_to_reach": {f"{lv:g}": stats.epochs_to_reach(epochs, curves["NME"], lv) for lv in study.nme_levels},
            "curves": dict(curves, epoch=epochs),
            "eval_weights": history[-1].get("eval_weights") if history else None,
            "sessions": len(sessions),
        }
        rec.update(_overhead(sessions, history))
        if status == "finished" and sets:
            rec["real_hands"] = evaluate_real_hands(run.run_dir, sets, pck_key)
        records.append(rec)
    return records


def _overhead(sessions: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Process wall time and the part of it outside the training epochs (start-up, data set build,
    untrained validation, tear-down), for runs trained in one study session only."""
    if len(sessions) != 1 or len(history) < 2 or _num(sessions[0].get("wall_s")) is None:
        return {"process_wall_s": None, "overhead_s": None, "overhead_fraction": None}
    wall = float(sessions[0]["wall_s"])
    t0, t1 = _num(history[0].get("wall_time")), _num(history[-1].get("wall_time"))
    if t0 is None or t1 is None:
        return {"process_wall_s": wall, "overhead_s": None, "overhead_fraction": None}
    overhead = max(wall - (t1 - t0), 0.0)
    return {"process_wall_s": wall, "overhead_s": overhead, "overhead_fraction": overhead / wall if wall else None}


# ---------------------------------------------------------------------------- analysis
#: The metrics compared with the reference arm: (record key, title); all lower-is-better.
COMPARED_METRICS = (("final_NME", "final NME"), ("best_NME", "best NME"), ("final_valid_loss", "final valid loss"))


def _family(hp: Mapping[str, Any]) -> str:
    """``adam`` / ``sgd`` / ``lookahead(adam)``: the optimizer, for grouping arms by LR."""
    opt = str(hp.get("optimizer", "?"))
    return f"lookahead({hp.get('inner', '?')})" if opt == "lookahead" else opt


def _per_seed(records: Sequence[Mapping[str, Any]], key: str) -> Dict[int, Optional[float]]:
    return {r["seed"]: r.get(key) for r in records if r["status"] == "finished"}


def _last_finite(values: Sequence[Optional[float]]) -> Optional[float]:
    return values[-1] if values and values[-1] is not None else None


def analyse(study: Study, records: Sequence[Mapping[str, Any]], out_dir: str) -> Dict[str, Any]:
    """The report dict: protocol, per-run records, per-arm statistics, paired comparisons with the
    reference, Lookahead slow vs fast, LR and k/alpha sensitivity, real-hand results, the verdict."""
    by_arm = {a.name: [r for r in records if r["arm"] == a.name] for a in study.arms}
    arms: Dict[str, Any] = {}
    for arm in study.arms:
        rs = by_arm[arm.name]
        done = [r for r in rs if r["status"] == "finished"]
        hp = next((r["hparams"] for r in rs if r["hparams"]), {})
        entry: Dict[str, Any] = {
            "config": os.path.relpath(arm.config, os.path.dirname(study.path)), "overrides": list(arm.overrides),
            "seeds": list(arm.seeds), "family": _family(hp) if hp else "", "lr": hp.get("lr"),
            "k": hp.get("k"), "alpha": hp.get("alpha"), "n_finished": len(done), "n_runs": len(rs),
            "statuses": {r["name"]: r["status"] for r in rs},
        }
        for key in ("final_NME", "best_NME", "PCK", "AUC", "EPE", "final_valid_loss", "wall_time_s",
                    "overhead_fraction"):
            entry[key] = stats.summarize([r[key] for r in done]).to_dict()
            entry[key]["per_seed"] = {str(r["seed"]): r[key] for r in done}
        entry["epochs_to_reach"] = {}
        for lv in study.nme_levels:
            eps = [r["epochs_to_reach"][f"{lv:g}"] for r in done]
            reached = [e for e in eps if e is not None]
            entry["epochs_to_reach"][f"{lv:g}"] = {
                "n_reached": len(reached), "n": len(eps), "mean": float(np.mean(reached)) if reached else None,
                "per_seed": {str(r["seed"]): e for r, e in zip(done, eps)}}
        arms[arm.name] = entry

    ref = by_arm[study.reference]
    comparisons: Dict[str, Any] = {}
    for arm in study.arms:
        if arm.name == study.reference:
            continue
        comparisons[arm.name] = {key: stats.paired_comparison(_per_seed(by_arm[arm.name], key),
                                                              _per_seed(ref, key)).to_dict()
                                 for key, _ in COMPARED_METRICS}

    lookahead: Dict[str, Any] = {}
    for arm in study.arms:
        done = [r for r in by_arm[arm.name] if r["status"] == "finished" and r["hparams"].get("optimizer") == "lookahead"]
        if not done:
            continue
        slow = {r["seed"]: _last_finite(r["curves"]["NME_slow"]) for r in done}
        fast = {r["seed"]: _last_finite(r["curves"]["NME_fast"]) for r in done}
        logged = any(v is not None for v in slow.values()) and any(v is not None for v in fast.values())
        # At a validation where the iteration count is a multiple of k the fast weights were just
        # reset to the slow ones and both NMEs coincide (always so after 30 epochs with k 5 or 10),
        # so the final values alone say little: compare the best values and the mean over epochs too.
        best_slow, best_fast, avg_slow, avg_fast, n_differ = {}, {}, {}, {}, {}
        for r in done:
            pairs = [(a, b) for e, a, b in zip(r["curves"]["epoch"], r["curves"]["NME_slow"], r["curves"]["NME_fast"])
                     if e >= 1 and a is not None and b is not None]
            if pairs:
                best_slow[r["seed"]], best_fast[r["seed"]] = min(a for a, _ in pairs), min(b for _, b in pairs)
                avg_slow[r["seed"]] = float(np.mean([a for a, _ in pairs]))
                avg_fast[r["seed"]] = float(np.mean([b for _, b in pairs]))
                n_differ[str(r["seed"])] = sum(a != b for a, b in pairs)
        lookahead[arm.name] = {
            "logged": logged, "final_NME_slow": {str(k): v for k, v in slow.items()},
            "final_NME_fast": {str(k): v for k, v in fast.items()},
            "slow": stats.summarize(list(slow.values())).to_dict(),
            "fast": stats.summarize(list(fast.values())).to_dict(),
            "slow_vs_fast": stats.paired_comparison(slow, fast).to_dict(),
            "best_slow_vs_fast": stats.paired_comparison(best_slow, best_fast).to_dict(),
            "epoch_mean_slow_vs_fast": stats.paired_comparison(avg_slow, avg_fast).to_dict(),
            "epochs_where_they_differ": n_differ,
            "eval_weights": next((r["eval_weights"] for r in done if r["eval_weights"]), None)}

    report = {
        "study": {"name": study.name, "file": study.path, "description": study.description,
                  "reference": study.reference, "shared_overrides": list(study.overrides),
                  "command_line_overrides": list(study.cli_overrides), "nme_levels": list(study.nme_levels),
                  "out_dir": os.path.abspath(out_dir), "real_hands": study.real_hands,
                  "generated": datetime.datetime.now().isoformat(timespec="seconds"),
                  "statistics": "per arm: mean, sample std (ddof 1) and 95% Student t interval over finished seeds; "
                                "vs the reference: paired by seed, mean of (arm - reference) with its 95% Student t "
                                "interval; 'better'/'worse' when the interval excludes 0 (lower is better)"},
        "scale": _scale(study),
        "runs": list(records),
        "arms": arms,
        "comparisons": comparisons,
        "lookahead": lookahead,
        "sensitivity": _sensitivity(study, arms),
        "real_hands": _real_hands_summary(study, by_arm, arms),
    }
    report["verdict"] = _verdict(report)
    return report


def _scale(study: Study) -> List[Dict[str, Any]]:
    """Per :data:`SCALE_KEYS`: the user's setting (the defaults) and this study's value(s) over its arms."""
    user = get_defaults()
    values: Dict[str, List[Any]] = {k: [] for k in SCALE_KEYS}
    for arm in study.arms:
        cfg = load_config(arm.config, list(study.overrides + arm.overrides + study.cli_overrides))
        for k in SCALE_KEYS:
            v = _get(cfg, k)
            if v not in values[k]:
                values[k].append(v)
    rows = []
    for k in SCALE_KEYS:
        u = _get(user, k)
        rows.append({"key": k, "user": u, "study": values[k][0] if len(values[k]) == 1 else values[k],
                     "scaled": values[k] != [u]})
    return rows


def _get(cfg, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return list(node) if isinstance(node, (list, tuple)) else node


def _sensitivity(study: Study, arms: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Final NME against LR per family (Lookahead arms keyed by k and alpha too), and the
    k x alpha grid of the Lookahead arms at the LR with the most (k, alpha) pairs."""
    lines: Dict[str, List[Dict[str, Any]]] = {}
    for name, a in arms.items():
        if a["lr"] is None or not a["final_NME"]["n"]:
            continue
        fam = a["family"] + (f" k{a['k']} alpha{a['alpha']:g}" if a["k"] is not None else "")
        lines.setdefault(fam, []).append({"arm": name, "lr": a["lr"], "mean": a["final_NME"]["mean"],
                                          "std": a["final_NME"]["std"], "ci_low": a["final_NME"]["ci_low"],
                                          "ci_high": a["final_NME"]["ci_high"], "n": a["final_NME"]["n"]})
    for pts in lines.values():
        pts.sort(key=lambda p: p["lr"])
    spread = {fam: {"lrs": [p["lr"] for p in pts], "min_mean": min(p["mean"] for p in pts),
                    "max_mean": max(p["mean"] for p in pts),
                    "range": max(p["mean"] for p in pts) - min(p["mean"] for p in pts)}
              for fam, pts in lines.items() if len(pts) >= 2}
    la = [(n, a) for n, a in arms.items() if a["k"] is not None and a["final_NME"]["n"]]
    grid: Dict[str, Any] = {}
    if la:
        by_lr: Dict[float, List[Tuple[str, Mapping[str, Any]]]] = {}
        for n, a in la:
            by_lr.setdefault(a["lr"], []).append((n, a))
        lr, members = max(by_lr.items(), key=lambda kv: (len({(a["k"], a["alpha"]) for _, a in kv[1]}), -kv[0]))
        if len({(a["k"], a["alpha"]) for _, a in members}) >= 2:
            ks = sorted({a["k"] for _, a in members})
            alphas = sorted({a["alpha"] for _, a in members})
            cells = {f"{a['k']},{a['alpha']:g}": {"arm": n, "mean": a["final_NME"]["mean"], "std": a["final_NME"]["std"],
                                                  "n": a["final_NME"]["n"]} for n, a in members}
            means = [c["mean"] for c in cells.values()]
            grid = {"lr": lr, "k": ks, "alpha": alphas, "cells": cells, "range": max(means) - min(means)}
    return {"lr_lines": lines, "lr_spread": spread, "k_alpha": grid}


def _real_hands_summary(study: Study, by_arm: Mapping[str, Sequence[Mapping[str, Any]]],
                        arms: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    sets = real_hand_sets(study.real_hands)
    if not sets:
        return {"available": False, "folder": study.real_hands,
                "note": "no real hand sets found" if study.real_hands else "disabled in the study file"}
    names = list(sets) + ["all"]
    per_arm: Dict[str, Any] = {}
    errors: Dict[str, str] = {}
    pck_key = "PCK"
    for arm, rs in by_arm.items():
        per_arm[arm] = {}
        for s in names:
            vals_nme, vals_pck = {}, {}
            for r in rs:
                res = r.get("real_hands")
                if not res:
                    continue
                if "error" in res:
                    errors[r["name"]] = res["error"]
                    continue
                pck_key = r["pck_key"]
                vals_nme[str(r["seed"])] = res.get(s, {}).get("NME")
                vals_pck[str(r["seed"])] = res.get(s, {}).get(pck_key)
            per_arm[arm][s] = {"NME": stats.summarize(list(vals_nme.values())).to_dict(),
                               "PCK": stats.summarize(list(vals_pck.values())).to_dict(),
                               "NME_per_seed": vals_nme, "PCK_per_seed": vals_pck,
                               "num_images": next((r["real_hands"][s]["num_images"] for r in rs
                                                   if r.get("real_hands") and s in r["real_hands"]), None)}
    ranked = [a for a in arms if arms[a]["final_NME"]["n"] and per_arm[a]["all"]["NME"]["n"]]
    synth = sorted(ranked, key=lambda a: arms[a]["final_NME"]["mean"])
    real = sorted(ranked, key=lambda a: per_arm[a]["all"]["NME"]["mean"])
    tau = None
    if len(ranked) >= 2:
        from scipy.stats import kendalltau

        tau = float(kendalltau([arms[a]["final_NME"]["mean"] for a in ranked],
                               [per_arm[a]["all"]["NME"]["mean"] for a in ranked]).statistic)
    ref_nme = {int(k): v for k, v in per_arm[study.reference]["all"]["NME_per_seed"].items()}
    vs_reference = {a: stats.paired_comparison({int(k): v for k, v in per_arm[a]["all"]["NME_per_seed"].items()},
                                               ref_nme).to_dict()
                    for a in per_arm if a != study.reference}
    return {"available": True, "folder": study.real_hands, "sets": names, "pck_key": pck_key,
            "per_arm": per_arm, "vs_reference": vs_reference, "errors": errors, "rank_synthetic": synth,
            "rank_real": real,
            "kendall_tau": tau if tau is None or math.isfinite(tau) else None}


def _fmt(v: Optional[float], spec: str = ".4f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def _verdict(report: Mapping[str, Any]) -> List[str]:
    """Plain sentences, each computed from the numbers of ``report``."""
    out: List[str] = []
    arms, ref = report["arms"], report["study"]["reference"]
    done = {n: a for n, a in arms.items() if a["final_NME"]["n"]}
    if not done:
        return ["No arm has a finished run yet: nothing to conclude."]
    order = sorted(done, key=lambda n: done[n]["final_NME"]["mean"])
    out.append("Ranking by mean final valid NME (lower is better): "
               + " < ".join(f"{n} ({done[n]['final_NME']['mean']:.4f}, n={done[n]['final_NME']['n']})" for n in order)
               + ".")
    groups: Dict[str, List[str]] = {stats.BETTER: [], stats.WORSE: [], stats.NO_DIFFERENCE: []}
    for name, comp in report["comparisons"].items():
        c = comp["final_NME"]
        if c["n"]:
            groups[c["verdict"]].append(f"{name} ({c['mean_diff']:+.4f}, 95% CI [{_fmt(c['ci_low'])}, "
                                        f"{_fmt(c['ci_high'])}], n={c['n']})")
    if any(groups.values()):
        parts = []
        if groups[stats.BETTER]:
            parts.append("better than " + ref + ": " + "; ".join(groups[stats.BETTER]))
        if groups[stats.WORSE]:
            parts.append("worse than " + ref + ": " + "; ".join(groups[stats.WORSE]))
        if groups[stats.NO_DIFFERENCE]:
            parts.append("no detectable difference from " + ref + " at this n: " + "; ".join(groups[stats.NO_DIFFERENCE]))
        out.append("Final NME, paired by seed: " + ". ".join(parts) + ".")
    bad = {r["name"]: r["status"] for r in report["runs"] if r["status"] in ("failed", "diverged")}
    if bad:
        out.append(f"{len(bad)} run(s) did not finish and are left out of the statistics: "
                   + ", ".join(f"{n} ({s})" for n, s in bad.items()) + ".")
    missing = [r["name"] for r in report["runs"] if r["status"] in ("partial", "not run")]
    if missing:
        out.append(f"{len(missing)} run(s) are not finished yet (partial or not run): the statistics cover the "
                   f"finished seeds only.")
    for name, la in report["lookahead"].items():
        c, b = la["epoch_mean_slow_vs_fast"], la["best_slow_vs_fast"]
        if la["logged"] and c["n"]:
            word = {stats.BETTER: "lower (better)", stats.WORSE: "higher (worse)"}
            out.append(f"{name}: slow - fast weights' valid NME, averaged over epochs 1..end: {c['mean_diff']:+.4f} "
                       f"(95% CI [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}], n={c['n']}); best NME slow - fast "
                       f"{b['mean_diff']:+.4f} (95% CI [{_fmt(b['ci_low'])}, {_fmt(b['ci_high'])}]): the slow weights "
                       f"are {word.get(c['verdict'], 'not detectably different')} over the run.")
    spread = report["sensitivity"]["lr_spread"]
    if spread:
        out.append("LR sensitivity (range of the mean final NME over the LRs tried): " + "; ".join(
            f"{fam}: {s['range']:.4f} over LR {min(s['lrs']):g}..{max(s['lrs']):g}"
            for fam, s in sorted(spread.items(), key=lambda kv: kv[1]["range"])) + ".")
    grid = report["sensitivity"]["k_alpha"]
    if grid:
        out.append(f"Lookahead k x alpha grid at LR {grid['lr']:g}: the mean final NME spans {grid['range']:.4f} "
                   f"over k {grid['k']} and alpha {grid['alpha']}.")
    rh = report["real_hands"]
    if rh.get("available") and rh.get("kendall_tau") is not None:
        same = rh["rank_synthetic"] == rh["rank_real"]
        out.append(f"Real hand photos ({', '.join(s for s in rh['sets'] if s != 'all')}): the ranking by real-photo NME "
                   + ("is the same as" if same else "differs from") + " the synthetic ranking (Kendall tau "
                   f"{rh['kendall_tau']:+.2f}): " + " < ".join(rh["rank_real"]) + ".")
    return out
