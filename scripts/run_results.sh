#!/usr/bin/env bash
# The training runs behind RESULTS.md, one after another, in the order they were run. A run whose
# metrics.json exists is skipped, and a killed one resumes from its checkpoint, so rerunning continues.
#   bash scripts/run_results.sh RUNS_DIR [NAME_PATTERN]
#   DRY_RUN=1 bash scripts/run_results.sh RUNS_DIR    # print each run's llp-train arguments, run nothing
# Each run's full command, start, end and result are appended to RUNS_DIR/runs.txt; its output goes to
# RUNS_DIR/NAME.log. CIFAR-10 runs expect the JPEG folders at /tmp/cifar10-jpg (see the flagfile).
set -euo pipefail
runs=${1:?usage: bash scripts/run_results.sh RUNS_DIR [NAME_PATTERN]}
pattern=${2:-.}
[[ -n ${DRY_RUN:-} ]] || mkdir -p "$runs"
cd "$(dirname "$0")/.."

run() {
  local name=$1; shift
  [[ $name =~ $pattern ]] || return 0
  if [[ -n ${DRY_RUN:-} ]]; then printf '%q ' "$@" "--workdir=$runs/$name"; echo; return 0; fi
  if [[ -f $runs/$name/metrics.json ]]; then echo "done before: $name"; return 0; fi
  local command="llp-train $* --workdir=$runs/$name"
  echo "$(date -u +%FT%TZ) start $name: $command" | tee -a "$runs/runs.txt"
  python -m llp_tf.tools.train "$@" --workdir="$runs/$name" > "$runs/$name.log" 2>&1
  python - "$runs/$name" <<'PY' | tee -a "$runs/runs.txt"
import json, sys, time
m = json.load(open(f"{sys.argv[1]}/metrics.json"))
pl = m.get("pseudo_label_accuracy")
print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} end {sys.argv[1]}: val_top1 {m['val_top1']:.4f} "
      f"knn_top1 {m['knn_top1']:.4f} pseudo_label_accuracy {pl if pl is None else round(pl, 4)} "
      f"wall_seconds {m['wall_seconds']:.0f}")
PY
}

fmnist=flags/paper/fashion_mnist_1pct.cfg
cifar=flags/paper/cifar10_jpg_1pct.cfg
from_sup=flags/departures/from_supervised.cfg
run fmnist_sup_s0 --flagfile=$fmnist --method=supervised
run fmnist_llp_from_sup_s0 --flagfile=$fmnist --flagfile=$from_sup --init_from="$runs/fmnist_sup_s0"
run cifar_sup_s0 --flagfile=$cifar --method=supervised
run cifar_llp_s0 --flagfile=$cifar  # the faithful method (Fashion-MNIST's is in RESULTS.md already)
run cifar_llp_from_sup_s0 --flagfile=$cifar --flagfile=$from_sup --init_from="$runs/cifar_sup_s0"
run fmnist_sup_lr003_s0 --flagfile=$fmnist --method=supervised --learning_rate=0.03
# LLP from the supervised network for 12 epochs instead of 6, learning rate dropped at epoch 9
long=(--flagfile=$from_sup --epochs=12 --lr_drop_epochs=9)
run cifar_llp_from_sup12_s0 --flagfile=$cifar "${long[@]}" --init_from="$runs/cifar_sup_s0"
run cifar_sup_lr003_s0 --flagfile=$cifar --method=supervised --learning_rate=0.03
run cifar_sup_s1 --flagfile=$cifar --method=supervised --seed=1
run cifar_llp_from_sup12_s1 --flagfile=$cifar "${long[@]}" --seed=1 --init_from="$runs/cifar_sup_s1"
run fmnist_sup_s1 --flagfile=$fmnist --method=supervised --seed=1
run fmnist_llp_from_sup_s1 --flagfile=$fmnist --flagfile=$from_sup --seed=1 --init_from="$runs/fmnist_sup_s1"
# Session 4. Paper Table 6 ablations on CIFAR-10 at 1%, each from the supervised network like the
# 6-epoch cifar_llp_from_sup_s0 (which is top10wclw, the full method), compared by 1-NN accuracy; and the
# non-iterative foil from the same start: one propagation from the supervised network, then training on
# those fixed pseudo-labels.
ablation() {  # NAME [SEED]
  local seed=${2:-0}
  run cifar_abl_${1}_s$seed --flagfile=$cifar --flagfile=$from_sup --flagfile=flags/ablation/$1.cfg \
    ${2:+--seed=$seed} --init_from="$runs/cifar_sup_s$seed"
}
ablation top50
ablation top50woc
run cifar_two_stage_s0 --flagfile=$cifar --flagfile=$from_sup --method=two_stage --init_from="$runs/cifar_sup_s0"
ablation top50lw
ablation top50wc
ablation top10
# 10% and 5% labels: supervised, then LLP from it (each dataset's 1% headline schedule).
for percent in 10 5; do
  fraction=--labelled_fraction=0.$(printf %02d $percent)
  run fmnist_sup_p${percent}_s0 --flagfile=$fmnist $fraction --method=supervised
  run fmnist_llp_from_sup_p${percent}_s0 --flagfile=$fmnist --flagfile=$from_sup $fraction \
    --init_from="$runs/fmnist_sup_p${percent}_s0"
  run cifar_sup_p${percent}_s0 --flagfile=$cifar $fraction --method=supervised
  run cifar_llp_from_sup12_p${percent}_s0 --flagfile=$cifar "${long[@]}" $fraction \
    --init_from="$runs/cifar_sup_p${percent}_s0"
done
# Session 5: the remaining K values, Fashion-MNIST's two-stage run, longer LLP from the supervised
# network on Fashion-MNIST, a second seed of the full method and of the two closest ablations.
ablation top5
ablation top20
run fmnist_two_stage_s0 --flagfile=$fmnist --flagfile=$from_sup --method=two_stage --init_from="$runs/fmnist_sup_s0"
run fmnist_llp_from_sup12_s0 --flagfile=$fmnist "${long[@]}" --init_from="$runs/fmnist_sup_s0"
ablation top10wclw 1  # the full method (cifar_llp_from_sup_s0 for seed 0, 1-NN by llp-eval --knn_k=1)
ablation top50lw 1
ablation top10 1
# Session 6: Fashion-MNIST LLP from the supervised network for 24 epochs; the refresh_bank departure
# (bank rewritten from unaugmented images before each propagation).
run fmnist_llp_from_sup24_s0 --flagfile=$fmnist --flagfile=$from_sup --epochs=24 --lr_drop_epochs=18 \
  --init_from="$runs/fmnist_sup_s0"
run fmnist_llp_refresh12_s0 --flagfile=$fmnist "${long[@]}" --flagfile=flags/departures/refresh_bank.cfg \
  --init_from="$runs/fmnist_sup_s0"
# What the network reaches with every label (the ceiling of any label-efficient method on it).
run fmnist_sup_p100_s0 --flagfile=$fmnist --labelled_fraction=1 --method=supervised
run cifar_sup_p100_s0 --flagfile=$cifar --labelled_fraction=1 --method=supervised
# Milder crops (at least 60% of the image instead of 20%) for the supervised run and LLP from it.
for seed in 0 1; do
  run fmnist_sup_crop60_s$seed --flagfile=$fmnist --method=supervised --crop_area_min=0.6 --seed=$seed
  run fmnist_llp_from_sup12_crop60_s$seed --flagfile=$fmnist "${long[@]}" --crop_area_min=0.6 --seed=$seed \
    --init_from="$runs/fmnist_sup_crop60_s$seed"
done
# A second seed of Fashion-MNIST's 12-epoch run from the supervised network.
run fmnist_llp_from_sup12_s1 --flagfile=$fmnist "${long[@]}" --seed=1 --init_from="$runs/fmnist_sup_s1"
# The labelled-share departure alone, a second seed of the faithful CIFAR-10 run (run in session 9).
run fmnist_llp_share_s0 --flagfile=$fmnist --flagfile=flags/departures/labelled_share.cfg
run cifar_llp_s1 --flagfile=$cifar --seed=1
# Session 7: a wider network (small_cnn --width=2, ~4x the compute per step) on Fashion-MNIST: does
# LLP's margin over the supervised run grow when the network has room above 600 labels? (Both run in
# session 8 on the idle machine; session 7's supervised run shared the cores with the test suite.)
run fmnist_sup_w2_s0 --flagfile=$fmnist --method=supervised --width=2
run fmnist_llp_from_sup12_w2_s0 --flagfile=$fmnist "${long[@]}" --width=2 --init_from="$runs/fmnist_sup_w2_s0"
# Session 8: a confidence threshold (pseudo-labels below 0.8 confidence weigh 0), from the same start
# as fmnist_llp_from_sup12_s0.
run fmnist_llp_from_sup12_thr08_s0 --flagfile=$fmnist "${long[@]}" --flagfile=flags/departures/confidence_threshold.cfg \
  --init_from="$runs/fmnist_sup_s0"
# Session 10: the recommended recipe in one run against its fair baseline (the same flags with
# --method=supervised, at two learning rates), on both datasets, two seeds; and the paper's schedule
# (10 instance-recognition + 200 LLP epochs) on 10,000 images with 10 labels per class.
recipe=flags/recommended.cfg
fm_data=--dataset=idx:/usr/share/datasets/fashion-mnist
cf_data=--dataset=folder:/tmp/cifar10-jpg
low=--lr_values=0.03,0.003,0.009,0.0009
for seed in 0 1; do
  run fmnist_recipe_s$seed --flagfile=$recipe $fm_data --seed=$seed
  run fmnist_recipe_sup_s$seed --flagfile=$recipe $fm_data --seed=$seed --method=supervised
  run fmnist_recipe_sup_low_s$seed --flagfile=$recipe $fm_data --seed=$seed --method=supervised $low
  run fmnist_recipe_sup_p100_s$seed --flagfile=$recipe $fm_data --seed=$seed --method=supervised --labelled_fraction=1
  run cifar_recipe_s$seed --flagfile=$recipe $cf_data --seed=$seed
  run cifar_recipe_sup_s$seed --flagfile=$recipe $cf_data --seed=$seed --method=supervised
  run cifar_recipe_sup_low_s$seed --flagfile=$recipe $cf_data --seed=$seed --method=supervised $low
  run cifar_recipe_sup_p100_s$seed --flagfile=$recipe $cf_data --seed=$seed --method=supervised --labelled_fraction=1
done
paper_schedule=(--epochs=210 --learning_rate=0.03 --lr_drop_epochs=130,170,190)
for seed in 0 1; do
  run fmnist10k_paper_llp_s$seed --flagfile=$fmnist --kept_fraction=0.16667 --labelled_fraction=0.0016667 \
    --instance_epochs=10 "${paper_schedule[@]}" --seed=$seed
  run fmnist10k_paper_sup_s$seed --flagfile=$fmnist --kept_fraction=0.16667 --labelled_fraction=0.0016667 \
    --method=supervised "${paper_schedule[@]}" --seed=$seed
  run cifar10k_paper_llp_s$seed --flagfile=$cifar --kept_fraction=0.2 --labelled_fraction=0.002 \
    --instance_epochs=10 "${paper_schedule[@]}" --seed=$seed
  run cifar10k_paper_sup_s$seed --flagfile=$cifar --kept_fraction=0.2 --labelled_fraction=0.002 \
    --method=supervised "${paper_schedule[@]}" --seed=$seed
done
# Session 12: the recipe with the consistency departure (flags/departures/consistency.cfg: FixMatch's
# unlabelled loss beside LLP's), against the same fair baseline and every-label run as the recipe.
for seed in 0 1; do
  run fmnist_recipe_cons_s$seed --flagfile=$recipe --flagfile=flags/departures/consistency.cfg $fm_data --seed=$seed
  run cifar_recipe_cons_s$seed --flagfile=$recipe --flagfile=flags/departures/consistency.cfg $cf_data --seed=$seed
done
# Session 13: the consistency departure in the supervised warm-up too (flags/departures/consistency_warmup.cfg:
# FixMatch from the first epoch, then beside LLP's loss), against the recipe's fair baseline.
for seed in 0 1; do
  run fmnist_recipe_cwarm_s$seed --flagfile=$recipe --flagfile=flags/departures/consistency_warmup.cfg $fm_data --seed=$seed
  run cifar_recipe_cwarm_s$seed --flagfile=$recipe --flagfile=flags/departures/consistency_warmup.cfg $cf_data --seed=$seed
done
