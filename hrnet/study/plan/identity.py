"""What a run is: the config it trained with and the code that trained it, against what the plan asks.

**Run identity.** A run folder counts for its arm only if its stored resolved config
(``<run>/config.yaml``, written by the trainer at every session) equals the planned config
(``load_config`` of the arm's yaml with the study's, the arm's and the command line's overrides and
``SEED`` / ``OUTPUT_DIR`` / ``EXPERIMENT_NAME``, as ``spec.plan_runs`` builds it), apart from:

* :data:`TRAJECTORY_FREE_KEYS`: keys that cannot change a trajectory (the trainer's resume-free
  list, ``hrnet.engine.run_record.RESUME_FREE_KEYS``, without the end epoch; plus the run folder's
  name, ``EXPERIMENT_NAME``);
* ``TRAIN.END_EPOCH`` when the plan raised it: the run continues the same trajectory up to the new
  end (the LR steps are absolute epochs, the warm-up is in iterations) and is resumed to it. A
  stored end epoch above the plan's is another run: it trained, and reports, past the plan's end;
* a key absent from the stored config (added to ``configs/defaults.py`` after the run) when the
  planned value is the key's default: a new key's default reproduces the old behaviour (the
  project's rule for new keys). A stored key the defaults no longer have is a difference.

Paths (``DATASET.ROOT``, ``MODEL.PRETRAINED``) compare resolved against the working directory, as
the trainer resolves them: ``datasets/x`` and its absolute spelling are the same folder (both are
written relative to the working directory, so no machine path reaches a report).

**The same setting.** :func:`setting` is an arm's whole resolved config minus
:data:`SETTING_FREE_KEYS` (the seed and the trajectory-free keys); the analysis calls two arms
"the same setting but X" only when these agree except the keys of X (the optimizer's own keys for a
Lookahead(X) - X pair, the length keys for a shorter version of an arm).

**Code version.** ``metrics.json`` holds ``code_version`` (the latest session's
``hrnet.runtime.provenance.code_version``: git commit, dirty flag, sha256 of the sources) and
``code_versions`` (one entry per session whose code differed, with the epoch it started from);
:func:`run_code_versions` reads them, :data:`NOT_RECORDED` for runs trained before provenance.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import configs
from configs import load_config
from hrnet.engine.run_record import CONFIG, RESUME_FREE_KEYS

__all__ = ["TRAJECTORY_FREE_KEYS", "SETTING_FREE_KEYS", "PATH_KEYS", "flat_config", "config_differences",
           "stored_config_differences", "describe_differences", "setting", "NOT_RECORDED", "code_label",
           "run_code_versions"]

#: Config keys that cannot change a run's trajectory: the trainer's resume-free list (whatever it
#: holds now) but the end epoch (a length, see the module docstring), and the run folder's name.
TRAJECTORY_FREE_KEYS = frozenset(RESUME_FREE_KEYS - {"TRAIN.END_EPOCH"}) | {"OUTPUT_DIR", "EXPERIMENT_NAME"}
#: Keys two arms may differ in and still be "the same setting": the seed (runs of one arm differ in
#: it) and the trajectory-free keys.
SETTING_FREE_KEYS = TRAJECTORY_FREE_KEYS | {"SEED"}
#: Path-valued keys, compared resolved against the working directory (as the trainer opens them).
PATH_KEYS = ("DATASET.ROOT", "MODEL.PRETRAINED")
_END = "TRAIN.END_EPOCH"
#: How many differing keys a stale run's reason lists.
SHOWN_DIFFERENCES = 3


def flat_config(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"A.B": value}`` of a (nested) config, lists for tuples, path keys (:data:`PATH_KEYS`)
    resolved and written relative to the working directory."""
    flat = configs.flat_config(cfg)
    for k in PATH_KEYS:
        if isinstance(flat.get(k), str) and flat[k]:
            # Relative to the working directory: one spelling per folder, and no machine path in a report.
            flat[k] = os.path.relpath(os.path.abspath(os.path.expanduser(flat[k])))
    return flat


def config_differences(stored: Mapping[str, Any], planned: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """``(key, stored value, planned value)`` for every key where a run's stored config (flat) is not
    the planned one (flat): ``configs.config_differences`` (the resume's rule) outside
    :data:`TRAJECTORY_FREE_KEYS`, and an end epoch that the plan raised counts as equal."""
    return [(k, old, new) for k, old, new in configs.config_differences(stored, planned, TRAJECTORY_FREE_KEYS)
            if not (k == _END and isinstance(old, int) and isinstance(new, int) and old <= new)]


def stored_config_differences(run_dir: str, config: str, opts: Any) -> Optional[List[Tuple[str, Any, Any]]]:
    """:func:`config_differences` of the run folder's ``config.yaml`` against ``load_config(config,
    opts)``; None when the folder has no ``config.yaml`` (nothing to check)."""
    import yaml

    path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            stored = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        return [(CONFIG, f"unreadable ({' '.join(str(exc).split())[:80]})", "the planned config")]
    if not isinstance(stored, dict):
        return [(CONFIG, f"a {type(stored).__name__}", "the planned config")]
    return config_differences(flat_config(stored), flat_config(load_config(config, list(opts))))


def describe_differences(diffs: List[Tuple[str, Any, Any]], limit: int = SHOWN_DIFFERENCES) -> str:
    """``TRAIN.LR 0.001 -> 0.05; ...`` (stored -> planned), the first ``limit`` keys and how many more."""
    shown = "; ".join(f"{k} {old} -> {new}" for k, old, new in diffs[:limit])
    return shown + (f" (+{len(diffs) - limit} more)" if len(diffs) > limit else "")


def setting(cfg: Any) -> Dict[str, Any]:
    """An arm's setting: its whole resolved config (flat, path keys resolved) minus
    :data:`SETTING_FREE_KEYS`. Two arms are the same setting where these agree."""
    return {k: v for k, v in flat_config(cfg).items() if k not in SETTING_FREE_KEYS}


# ---------------------------------------------------------------------------- code version
#: The code version of a run trained before metrics.json recorded one.
NOT_RECORDED = "not recorded (before provenance)"


def code_label(cv: Any) -> str:
    """``git 1a2b3c4d5e (dirty), source 0123456789ab`` of a ``code_version`` dict; :data:`NOT_RECORDED`
    for anything else. The source hash identifies the code even where git did not (a dirty tree, no git)."""
    if not isinstance(cv, Mapping):
        return NOT_RECORDED
    commit, src = cv.get("git_commit"), cv.get("source_sha256")
    parts = []
    if isinstance(commit, str) and commit:
        parts.append(f"git {commit[:10]}" + (" (dirty)" if cv.get("git_dirty") else ""))
    if isinstance(src, str) and src:
        parts.append(f"source {src[:12]}")
    return ", ".join(parts) or NOT_RECORDED


def _code_id(cv: Any) -> str:
    """What makes two code versions the same: the source hash where recorded, else the label."""
    src = cv.get("source_sha256") if isinstance(cv, Mapping) else None
    return src if isinstance(src, str) and src else code_label(cv)


def run_code_versions(info: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The code that trained a run, from its ``metrics.json``: ``[{"label", "id", "from_epoch"}]``
    in training order (several when a resumed session ran other code). Epochs before the first
    recorded session (a run resumed after provenance came in) are :data:`NOT_RECORDED`."""
    entries = info.get("code_versions")
    out: List[Dict[str, Any]] = []
    if isinstance(entries, list):
        for e in entries:
            if isinstance(e, Mapping) and isinstance(e.get("code_version"), Mapping):
                start = e.get("from_epoch")
                out.append({"label": code_label(e["code_version"]), "id": _code_id(e["code_version"]),
                            "from_epoch": start if isinstance(start, int) and not isinstance(start, bool) else None})
    if not out and isinstance(info.get("code_version"), Mapping):
        out.append({"label": code_label(info["code_version"]), "id": _code_id(info["code_version"]),
                    "from_epoch": None})
    if not out or (out[0]["from_epoch"] or 0) > 0:
        out.insert(0, {"label": NOT_RECORDED, "id": NOT_RECORDED, "from_epoch": 0 if out else None})
    return out
