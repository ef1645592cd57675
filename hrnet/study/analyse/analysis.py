"""A study's results: every run folder read back (:func:`collect`) and the report dict (:func:`analyse`).

``collect`` reads each planned run's folder ``<out>/runs/<arm>_seed<s>/``, from its small records
alone (``metrics.json``, ``config.yaml``, ``real_hands.json``, ``study_sessions.json``: what a
repository keeps of a study), so ``tools/study.py --report-only`` works without checkpoints.
``analyse`` assembles, in this order: the protocol and scale (with training iterations beside
the user's), the no-learning floors (``floors.py``) and the calibration of the scale
(``calibration.py``), per-arm statistics over all finished seeds (final NME as a fraction of the
floor, "has not learned", censored epochs-to-reach), the paired comparisons with Holm-adjusted
verdicts (``comparisons.py``), the trend with training length (``trend.py``), the rankings,
sensitivity and real-photo results on common seeds (``rankings.py``), the answer's sections (Lookahead
against the user's other optimizers, effective-step pairs, effective time, k x alpha, tuned against
tuned, the table of Holm families fixed by the plan and the machines: ``families.py``) and the
verdict sentences (``verdict.py``). Arms that are shorter or longer versions of another arm enter the trend only;
every other family compares arms at the reference's training length. Replicate arms (another arm's
setting again: ``machines.py``) enter only the machine-to-machine spread (``replicates``,
``machine_spread``). Only finished runs enter any statistic. Paths in the report are relative to
the working directory.
"""
from __future__ import annotations

import datetime
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from configs import load_config
from hrnet.engine.run_record import hparams, read_metrics
from hrnet.study.analyse import stats
from hrnet.study.analyse.answer import reference_families
from hrnet.study.analyse.calibration import calibration
from hrnet.study.analyse.code_versions import provenance
from hrnet.study.analyse.comparisons import lookahead_slow_fast, same_lr_pairs, vs_reference
from hrnet.study.analyse.families import answer_sections
from hrnet.study.analyse.floors import LEARNED_FRACTION, has_learned, study_floors
from hrnet.study.analyse.machines import machine_spread, replicate_arms
from hrnet.study.analyse.rankings import ranking, real_hands_summary, sensitivity
from hrnet.study.analyse.real_photos import FROM_RECORDS, evaluate_real_hands, study_real_sets
from hrnet.study.plan.identity import run_code_versions
from hrnet.study.plan.runs import STALE, UNVERIFIED, read_sessions, run_status
from hrnet.study.plan.scale import (arm_config, arm_setting, iteration_summary, scale_rows, training_iterations,
                               user_iterations)
from hrnet.study.plan.spec import PlannedRun, Study, plan_runs
from hrnet.study.analyse.trend import length_variants, trend
from hrnet.study.analyse.verdict import verdict

__all__ = ["collect", "analyse", "rel_path", "STATISTICS"]

#: The statistics, in words (copied into the report's protocol section).
STATISTICS = ("per arm: mean, sample std (ddof 1) and 95% Student t interval over its finished seeds (labelled "
              "'all seeds'); rankings, LR ranges and side-by-side means over the seeds all their arms share; "
              "comparisons: paired by seed, mean of (arm - other) with its unadjusted 95% Student t interval and "
              "the paired t-test's p-value, Holm-adjusted within each family of comparisons, a family fixed by "
              "the plan (m = its planned members, those not yet measured counting as p = 1; 'provisional' until "
              "all are measured); where the question is whether two arms match, two one-sided paired t-tests "
              "(TOST) at a stated margin; the verdict "
              f"(better / worse) needs an adjusted p < 0.05 and at least {stats.MIN_PAIRS} pairs ('too few seeds' "
              f"otherwise), and a comparison whose two sides both end above {LEARNED_FRACTION:g} x the box-centre "
              "floor reads 'has not learned'; best NME is selected on the validation set (optimistic) and gets "
              "no verdict; the trend with training length: Lookahead(X) - X paired by seed at each length (one Holm "
              "family) and the per-seed change of that gap between the shortest and the longest lengths where "
              "both arms learned, over the seeds all four arms finished (one Holm family over the lines)")


def rel_path(path: Optional[str]) -> Optional[str]:
    """``path`` relative to the working directory (a report holds no absolute path of the machine)."""
    return os.path.relpath(path) if path else path


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _scrub(text: str, out_dir: str) -> str:
    """``text`` with the output folder's absolute path written relative to the working directory."""
    return text.replace(os.path.abspath(out_dir), rel_path(os.path.abspath(out_dir)))


def _record(run: PlannedRun, out_dir: str) -> Dict[str, Any]:
    """One run's record from its folder (``metrics.json``, the study's session records)."""
    from hrnet.evaluation.metrics import metric_names

    info, problems = read_metrics(run.run_dir)
    sessions = read_sessions(run.run_dir)
    status, reason = run_status(run, info, sessions)
    cfg = load_config(run.config, list(run.opts))
    pck_key = metric_names(cfg)[1]
    final = info.get("final", {}) if isinstance(info.get("final"), dict) else {}
    history = [h for h in info.get("history", []) if isinstance(h, dict)]
    curves = {k: [_num(h.get(k)) for h in history] for k in ("train_loss", "valid_loss", "NME", "NME_slow", "NME_fast")}
    world = info.get("world_size") if isinstance(info.get("world_size"), int) else 1
    rec: Dict[str, Any] = {
        "name": run.name, "arm": run.arm, "seed": run.seed, "status": status, "reason": _scrub(reason, out_dir),
        "problems": [_scrub(str(p), out_dir) for p in problems], "epochs_completed": info.get("epochs_completed"),
        "end_epoch": run.end_epoch, "iterations": training_iterations(cfg, world), "hparams": info.get("hparams", {}),
        "final_NME": _num(info.get("final_NME")), "best_NME": _num(info.get("best_NME")),
        "best_epoch": info.get("best_epoch"), "final_valid_loss": _num(info.get("final_valid_loss")),
        "final_train_loss": _num(info.get("final_train_loss")), "pck_key": pck_key,
        "PCK": _num(final.get(pck_key)), "AUC": _num(final.get("AUC")), "EPE": _num(final.get("EPE")),
        "wall_time_s": _num(info.get("wall_time_s")), "curves": dict(curves, epoch=[int(h.get("epoch", i))
                                                                              for i, h in enumerate(history)]),
        "eval_weights": history[-1].get("eval_weights") if history else None, "sessions": len(sessions),
        "machine": _machine(info), "code_versions": run_code_versions(info) if info else [],
    }
    rec["code_version"] = rec["code_versions"][-1]["label"] if info else None
    rec.update(_overhead(sessions, history))
    return rec


def _machine(info: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The machine the run trained on, as ``metrics.json`` records it (``machine``: cpu, cpu_flags,
    torch, threads, device; cpu_id, cache_kib and the ``numerics`` fingerprint where recorded), or
    None for a run that did not record it."""
    m = info.get("machine")
    if not isinstance(m, dict):
        return None
    flags = m.get("cpu_flags")
    threads = m.get("threads")
    text = (lambda k: m.get(k) if isinstance(m.get(k), str) else None)
    out = {"cpu": text("cpu"), "cpu_flags": [str(f) for f in flags] if isinstance(flags, list) else [],
           "torch": text("torch"),
           "threads": threads if isinstance(threads, int) and not isinstance(threads, bool) else None,
           "device": text("device")}
    for k in ("cpu_id", "cache_kib"):  # recorded since the numerics fingerprint (hrnet.runtime.device)
        if isinstance(m.get(k), dict):
            out[k] = dict(m[k])
    if text("numerics"):
        out["numerics"] = text("numerics")
    return out


def collect(study: Study, out_dir: str, evaluate_real: bool = True) -> List[Dict[str, Any]]:
    """One record per planned run, read back from its folder (``metrics.json`` through
    ``hrnet.engine.run_record``, the study's session records, the cached real-hand evaluation of
    the final model). Works from those small files alone: no checkpoint is opened when the
    real-photo result is cached; without the photo folder the committed caches are the results."""
    runs = plan_runs(study, out_dir)
    sets, committed = study_real_sets(study.real_hands, [r.run_dir for r in runs]) if evaluate_real else ({}, None)
    records = []
    for run in runs:
        rec = _record(run, out_dir)
        rec["epochs_to_reach"] = {f"{lv:g}": stats.epochs_to_reach(rec["curves"]["epoch"], rec["curves"]["NME"], lv)
                                  for lv in study.nme_levels}
        if rec["status"] == "finished" and sets:
            rec["real_hands"] = evaluate_real_hands(run.run_dir, sets, rec["pck_key"], committed)
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


# ---------------------------------------------------------------------------- per arm
#: Per-arm summaries over all finished seeds.
SUMMARISED = ("final_NME", "best_NME", "PCK", "AUC", "EPE", "final_valid_loss", "wall_time_s", "overhead_fraction")


def _family(hp: Mapping[str, Any]) -> str:
    """``adam`` / ``sgd`` / ``lookahead(adam)``: the optimizer, for grouping arms by LR."""
    opt = str(hp.get("optimizer", "?"))
    return f"lookahead({hp.get('inner', '?')})" if opt == "lookahead" else opt


def finished(records: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The records that enter the statistics: finished runs only, in seed order (whatever the order
    of the records, the same lists and the same floating-point sums)."""
    return sorted((r for r in records if r["status"] == "finished"), key=lambda r: r["seed"])


def _arm_entry(study: Study, arm, rs: Sequence[Mapping[str, Any]], floor: Optional[float]) -> Dict[str, Any]:
    """Per-arm statistics over its finished seeds, against the box-centre ``floor``; ``hparams`` as
    its runs recorded them (from its config before any run), ``setting`` from its config."""
    done = finished(rs)
    cfg = arm_config(study, arm)
    by_seed = sorted(rs, key=lambda r: r["seed"])  # the first seed's, whatever the records' order
    hp = next((r["hparams"] for r in by_seed if r["hparams"]), None) or {k: v for k, v in hparams(cfg, 1).items()
                                                                    if k != "seed"}
    entry: Dict[str, Any] = {
        "config": os.path.relpath(arm.config, os.path.dirname(study.path)), "overrides": list(arm.overrides),
        "seeds": list(arm.seeds), "finished_seeds": [r["seed"] for r in done], "family": _family(hp) if hp else "",
        "lr": hp.get("lr"), "k": hp.get("k"), "alpha": hp.get("alpha"), "hparams": dict(hp),
        "n_finished": len(done), "n_runs": len(rs), "statuses": {r["name"]: r["status"] for r in rs},
        "iterations": sorted({r["iterations"] for r in rs if r["iterations"] is not None}),
        "setting": arm_setting(cfg), "priority": arm.priority,
        "seed_priority": {str(k): v for k, v in getattr(arm, "seed_priority", ())},
    }
    for key in SUMMARISED:
        entry[key] = stats.summarize([r[key] for r in done]).to_dict()
        entry[key]["per_seed"] = {str(r["seed"]): r[key] for r in done}
    mean = entry["final_NME"]["mean"] if entry["final_NME"]["n"] else None
    entry["final_NME_over_floor"] = mean / floor if mean is not None and floor else None
    entry["learned"] = has_learned(mean, floor)
    entry["epochs_to_reach"] = {f"{lv:g}": stats.censored_reach({r["seed"]: r["epochs_to_reach"][f"{lv:g}"]
                                                                 for r in done}) for lv in study.nme_levels}
    return entry


def analyse(study: Study, records: Sequence[Mapping[str, Any]], out_dir: str) -> Dict[str, Any]:
    """The report dict: protocol, scale, floors, calibration, per-run records, per-arm statistics,
    comparisons (vs the reference, same-LR pairs, Lookahead slow vs fast) and the ranking,
    sensitivity and real photos over the arms at the reference's length; the trend; the verdict."""
    sets, committed = study_real_sets(study.real_hands, [r.run_dir for r in plan_runs(study, out_dir)])
    floors = study_floors(arm_config(study, study.arm(study.reference)), sets, out_dir)
    floors["learned_fraction"] = LEARNED_FRACTION
    floor = floors["valid"]["box_centre"]["NME"] if floors.get("available") else None
    every_run = {a.name: [r for r in records if r["arm"] == a.name] for a in study.arms}
    every_arm = {a.name: _arm_entry(study, a, every_run[a.name], floor) for a in study.arms}
    replicates = replicate_arms(every_arm, study.reference)  # the same runs again: the machine spread only
    by_arm = {a: rs for a, rs in every_run.items() if a not in replicates}
    arms = {a: e for a, e in every_arm.items() if a not in replicates}
    variants = length_variants(arms, study.reference)
    for name, of in variants.items():
        arms[name]["length_variant_of"] = of
    main = {a: e for a, e in arms.items() if a not in variants}  # the arms at the reference's length
    main_runs = {a: by_arm[a] for a in main}
    report: Dict[str, Any] = {
        "study": _protocol(study, out_dir), "scale": scale_rows(study),
        "iterations": iteration_summary(records, arms), "floors": floors,
        "calibration": calibration(study.reference, records, floors), "runs": list(records), "arms": arms,
        "length_variants": variants, "ranking": ranking(main),
        "comparisons": vs_reference(study.reference, main_runs, main, reference_families(main, study.reference)),
        "same_lr": same_lr_pairs(main_runs, main),
        "trend": trend(by_arm, arms, study.reference, user_iterations()),
        "lookahead": lookahead_slow_fast(main_runs, main),
        "sensitivity": sensitivity(main),
        "real_hands": real_hands_summary(study.reference, main_runs, main, sets, floors, rel_path(study.real_hands)),
    }
    if committed is not None and report["real_hands"].get("available"):
        report["real_hands"]["source"] = FROM_RECORDS
    report.update(answer_sections(study.reference, by_arm, arms, main, report))
    report["replicates"] = {a: dict(every_arm[a], replicate_of=of) for a, of in replicates.items()}
    report["machine_spread"] = machine_spread(report, every_run, every_arm, replicates)
    report["provenance"] = provenance(report, by_arm)
    report["verdict"] = _stale_sentence(records) + verdict(report)
    return report


def _stale_sentence(records: Sequence[Mapping[str, Any]]) -> List[str]:
    """The runs whose folder holds another config than the plan's: they count for nothing."""
    stale = [r for r in records if r["status"] in (STALE, UNVERIFIED)]
    if not stale:
        return []
    return [f"{len(stale)} run folder(s) hold a run of another config than this plan (stale: stored -> planned) "
            "or no config.yaml (unverified), and "
            "count for nothing (restore the plan, or train with --move-stale): "
            + "; ".join(f"{r['name']} ({r['reason']})" for r in stale[:4]) + (" ..." if len(stale) > 4 else "") + "."]


def _protocol(study: Study, out_dir: str) -> Dict[str, Any]:
    return {"name": study.name, "file": rel_path(study.path), "description": study.description,
            "reference": study.reference, "shared_overrides": list(study.overrides),
            "command_line_overrides": list(study.cli_overrides), "nme_levels": list(study.nme_levels),
            "out_dir": rel_path(os.path.abspath(out_dir)), "real_hands": rel_path(study.real_hands),
            "paths": "relative to the working directory of the command that wrote the report",
            "generated": datetime.datetime.now().isoformat(timespec="seconds"), "statistics": STATISTICS,
            "min_pairs": stats.MIN_PAIRS}
