#!/usr/bin/env bash
# The controller study on NASRL-Bench-Digits-v0: REINFORCE settings against random search and
# the paper preset, 1,000 children a run (seconds each). docs/controller_study.md holds the tables this made.
#   ROUND=1 (SEEDS=10): learning rate, m, baseline decay and the ENAS/PPO options, judged by the max-reward
#            incumbent, all without an entropy bonus (the default of the time) -> runs/study
#   ROUND=2 (SEEDS=20): the entropy bonus at lr 0.01, judged by the mean-reward incumbent -> runs/study2
#   ROUND=3 (SEEDS=20): options on top of the default against regularized evolution -> runs/study3, then the
#            three best on fresh seeds 200-219 -> runs/study3_confirm
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ "${ROUND:-2}" = 1 ]; then
VARIANTS='{
 "lr0.003": {"agent": "reinforce", "kwargs": {"lr": 0.003, "entropy_coef": 0.0}},
 "lr0.01": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.0}},
 "lr0.03": {"agent": "reinforce", "kwargs": {"lr": 0.03, "entropy_coef": 0.0}},
 "lr0.01-m2": {"agent": "reinforce", "kwargs": {"lr": 0.01, "children_per_update": 2, "entropy_coef": 0.0}},
 "lr0.01-m10": {"agent": "reinforce", "kwargs": {"lr": 0.01, "children_per_update": 10, "entropy_coef": 0.0}},
 "lr0.01-b0.8": {"agent": "reinforce", "kwargs": {"lr": 0.01, "baseline_decay": 0.8, "entropy_coef": 0.0}},
 "lr0.01-b0.99": {"agent": "reinforce", "kwargs": {"lr": 0.01, "baseline_decay": 0.99, "entropy_coef": 0.0}},
 "lr0.01-ent0.01": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.01}},
 "lr0.01-tanh": {"agent": "reinforce", "kwargs": {"lr": 0.01, "temperature": 5.0, "tanh_constant": 1.5, "op_tanh_reduce": 2.5, "entropy_coef": 0.0}},
 "lr0.01-skipkl": {"agent": "reinforce", "kwargs": {"lr": 0.01, "skip_penalty": 0.8, "skip_target": 0.4, "entropy_coef": 0.0}},
 "lr0.01-norm": {"agent": "reinforce", "kwargs": {"lr": 0.01, "normalize_advantage": true, "entropy_coef": 0.0}},
 "lr0.003-norm": {"agent": "reinforce", "kwargs": {"lr": 0.003, "normalize_advantage": true, "entropy_coef": 0.0}},
 "lr0.01-ppo4": {"agent": "reinforce", "kwargs": {"lr": 0.01, "ppo_epochs": 4, "clip_ratio": 0.2, "entropy_coef": 0.0}},
 "lr0.003-ppo4": {"agent": "reinforce", "kwargs": {"lr": 0.003, "ppo_epochs": 4, "clip_ratio": 0.2, "entropy_coef": 0.0}}
}'
LABELS=$(echo "$VARIANTS" | $PY -c 'import json, sys; print(" ".join(json.load(sys.stdin)))')
$PY -m agents.experiment.agent_bench --agents random reinforce-paper $LABELS --variants "$VARIANTS" --incumbent max \
    --seeds "${SEEDS:-10}" --children "${CHILDREN:-1000}" --out "${OUT:-runs/study}"
elif [ "${ROUND:-2}" = 3 ]; then
VARIANTS='{
 "ent0.02": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.02}},
 "ent0.05": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.05}},
 "ent0.02-ppo4": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.02, "ppo_epochs": 4, "clip_ratio": 0.2}},
 "ent0.05-ppo4": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.05, "ppo_epochs": 4, "clip_ratio": 0.2}},
 "ent0.02-m2": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.02, "children_per_update": 2}},
 "ent0.05-lr0.03": {"agent": "reinforce", "kwargs": {"lr": 0.03, "entropy_coef": 0.05}},
 "ent0.02-norm": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.02, "normalize_advantage": true}}
}'
$PY -m agents.experiment.agent_bench --agents random evolution ent0.02 ent0.05 ent0.02-ppo4 ent0.05-ppo4 ent0.02-m2 \
    ent0.05-lr0.03 ent0.02-norm --variants "$VARIANTS" --seeds "${SEEDS:-20}" --children "${CHILDREN:-1000}" \
    --workers 1 --out "${OUT:-runs/study3}"
$PY -m agents.experiment.agent_bench --agents random evolution ent0.02 ent0.02-ppo4 ent0.05-lr0.03 --variants "$VARIANTS" \
    --seeds "${SEEDS:-20}" --first-seed 200 --children "${CHILDREN:-1000}" --workers 2 \
    --out "${OUT:-runs/study3}_confirm"
else
VARIANTS='{
 "ent0":    {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.0}},
 "ent0.02": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.02}},
 "ent0.05": {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.05}},
 "ent0.1":  {"agent": "reinforce", "kwargs": {"lr": 0.01, "entropy_coef": 0.1}}
}'
$PY -m agents.experiment.agent_bench --agents random ent0 ent0.02 ent0.05 ent0.1 --variants "$VARIANTS" --incumbent mean \
    --seeds "${SEEDS:-20}" --children "${CHILDREN:-1000}" --out "${OUT:-runs/study2}"
fi
