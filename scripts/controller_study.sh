#!/usr/bin/env bash
# The controller study of issue 14 on NASRL-Bench-Digits-v0: REINFORCE settings against random search and
# the paper preset, 20 seeds x 1,000 children each (seconds a run). Results: runs/study/table.md and
# summary.json; docs/controller_study.md holds the table this produced.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VARIANTS='{
 "lr0.003":      {"agent": "reinforce", "kwargs": {"lr": 0.003}},
 "lr0.01":       {"agent": "reinforce", "kwargs": {"lr": 0.01}},
 "lr0.03":       {"agent": "reinforce", "kwargs": {"lr": 0.03}},
 "lr0.01-m2":    {"agent": "reinforce", "kwargs": {"lr": 0.01, "children_per_update": 2}},
 "lr0.01-m10":   {"agent": "reinforce", "kwargs": {"lr": 0.01, "children_per_update": 10}},
 "lr0.01-b0.8":  {"agent": "reinforce", "kwargs": {"lr": 0.01, "baseline_decay": 0.8}},
 "lr0.01-b0.99": {"agent": "reinforce", "kwargs": {"lr": 0.01, "baseline_decay": 0.99}},
 "lr0.01-ent0.01": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.01}},
 "lr0.01-tanh":  {"agent": "reinforce", "kwargs": {"lr": 0.01, "temperature": 5.0, "tanh_constant": 1.5, "op_tanh_reduce": 2.5}},
 "lr0.01-skipkl": {"agent": "reinforce", "kwargs": {"lr": 0.01, "skip_penalty": 0.8, "skip_target": 0.4}},
 "lr0.01-norm":  {"agent": "reinforce", "kwargs": {"lr": 0.01, "normalize_advantage": true}},
 "lr0.003-norm": {"agent": "reinforce", "kwargs": {"lr": 0.003, "normalize_advantage": true}},
 "lr0.01-ppo4":  {"agent": "reinforce", "kwargs": {"lr": 0.01, "ppo_epochs": 4, "clip_ratio": 0.2}},
 "lr0.003-ppo4": {"agent": "reinforce", "kwargs": {"lr": 0.003, "ppo_epochs": 4, "clip_ratio": 0.2}}
}'
LABELS=$(echo "$VARIANTS" | $PY -c 'import json, sys; print(" ".join(json.load(sys.stdin)))')
$PY -m agents.agent_bench --agents random reinforce-paper $LABELS --variants "$VARIANTS" \
    --seeds "${SEEDS:-20}" --children "${CHILDREN:-1000}" --out "${OUT:-runs/study}"
