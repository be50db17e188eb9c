#!/usr/bin/env bash
# Keypoint-variant x seed sweep: run_end_to_end_pipeline.sh once per variant and seed,
# one full-dataset model per variant, collect_results per variant (mean ± std over the seeds), and one table that
# compares the variants (results/variants_summary.{csv,txt} under <OUTPUT_ROOT>/<DATASET_NAME>/loso/).
#
#   bash run_end_to_end_variants.sh                                   # keypoints already in data/arabic-asl-90kpts
#   RAW_DIR=MLR511-ArabicSignLanguage-Dataset-MP4 bash run_end_to_end_variants.sh      # extract once, then sweep
#   VARIANTS="42kpts-hands 65kpts" SEED_LIST=42,511 HOLDOUTS=user01,user08,user11 bash run_end_to_end_variants.sh
#
# Variant V uses the config CONFIG_TEMPLATE with {variant} = V (default configs/arabic-asl-V.yaml) and the
# experiment prefix of `runs.py variant_prefix V`: <DATASET_NAME>_<V with '-' -> '_'> (e.g.
# arabic_asl_42kpts_hands), but arabic_asl_65kpts_pose_hands for 65kpts, as in the reference.
# Seed S trains <prefix>_seed<S>_<DATASET_NAME>_LOSO_<user> with seed S and exports PTQ/QAT, with
# the same seed, into exports/{ptq,qat}_<prefix>_seed<S>/<user>/ (exports/{ptq,qat}_<prefix> links
# to seed FULL_SEED's). The full-dataset model is <prefix>_full (seed FULL_SEED, default the
# first seed), exported into full/exports/{ptq,qat}_<prefix>/.
#
# Data: one extracted dataset serves every variant whose layout allows it. A config of layout 65 reads 65- and
# 90-point pickles (keypoints.READABLE_FROM), so when a variant needs the 90-point layout DATA_DIR_65 defaults to
# DATA_DIR_90 and the videos are extracted once, with 90 points. Layout L reads DATA_DIR_<L> (default
# data/arabic-asl-<L>kpts). With RAW_DIR each dataset folder in use is extracted once (FLIP_USERS, EXTRACT_WORKERS);
# without RAW_DIR the folders must already hold keypoints, and a variant needing 90 points that are
# not there is skipped (one line). FLIPPED_DIR is refused: set FLIP_USERS.
#
# Settings (environment): VARIANTS, SEED_LIST, HOLDOUTS (default all), RUN_LOSO, RUN_FULL_DATASET, RUN_COLLECT,
# CONFIG_TEMPLATE, DATASET_NAME, OUTPUT_ROOT, RAW_DIR, DATA_DIR_65, DATA_DIR_90, FLIP_USERS, EXTRACT_WORKERS,
# FULL_SEED, VENV; every other setting of run_end_to_end_pipeline.sh (EPOCHS, LR, QAT_EPOCHS, PTQ_MODES, ...) is
# passed through to it. Resumable like the pipeline: finished work is skipped, an interrupted training continues.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VARIANTS="${VARIANTS:-42kpts-hands 44kpts-hands-wrists 46kpts-hands-shoulders-wrists 65kpts 90kpts}"
SEED_LIST="${SEED_LIST:-42,511,999983,1000003,324528439}"
HOLDOUTS="${HOLDOUTS:-all}"
RUN_LOSO="${RUN_LOSO:-1}"
RUN_FULL_DATASET="${RUN_FULL_DATASET:-1}"
RUN_COLLECT="${RUN_COLLECT:-1}"
TEMPLATE_DEFAULT='configs/arabic-asl-{variant}.yaml'   # (a literal "}" cannot sit inside ${...:-...})
CONFIG_TEMPLATE="${CONFIG_TEMPLATE:-$TEMPLATE_DEFAULT}"
OUTPUT_ROOT="${OUTPUT_ROOT:-${SIGNBART_OUTPUT_ROOT:-outputs}}"
RAW_DIR="${RAW_DIR:-}"
FLIP_USERS="${FLIP_USERS:-}"
EXTRACT_WORKERS="${EXTRACT_WORKERS:-}"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
read -ra SEEDS <<< "${SEED_LIST//,/ }"
FULL_SEED="${FULL_SEED:-${SEEDS[0]}}"

PIPELINE_NAME=variants STAGE_MARK="#####"
source pipeline_common.sh   # stage, skip, run, enabled, results_current; a failure names its stage

run_tree() {  # run_tree <NAME> [<experiment prefix>]: one NAME=value of `runs.py paths` (the run tree)
    "$PY" runs.py paths --output_root "$OUTPUT_ROOT" --dataset_name "$DATASET_NAME" \
        --exp_prefix "${2:-}" | sed -n "s/^$1=//p"
}
config_of() { echo "${CONFIG_TEMPLATE//\{variant\}/$1}"; }
prefix_of() {  # experiment prefix (runs.variant_prefix: 65kpts -> <dataset>_65kpts_pose_hands)
    "$PY" runs.py variant_prefix "$1" --dataset_name "$DATASET_NAME" --output_root "$OUTPUT_ROOT"
}
layout_of() { "$PY" -c 'import sys; from config import load_config; print(load_config(sys.argv[1])["layout"])' "$1"; }
data_dir_of() { local var="DATA_DIR_$1"; echo "${!var:-data/arabic-asl-$1kpts}"; }

read_variants() {  # LAYOUT[variant] from each config; the 65-point variants share the 90-point data when it is needed
    local variant config dir kept=()
    declare -gA LAYOUT
    for variant in $VARIANTS; do
        config="$(config_of "$variant")"
        [[ -f "$config" ]] || { echo "error: variant $variant: config $config not found" >&2; return 2; }
        LAYOUT[$variant]="$(layout_of "$config")"
    done
    if [[ -z "$RAW_DIR" ]]; then  # without videos, a variant runs only on keypoints that exist
        for variant in $VARIANTS; do
            dir="$(data_dir_of "${LAYOUT[$variant]}")"
            if [[ "${LAYOUT[$variant]}" == 90 && ! -f "$dir/label2id.json" ]]; then
                echo "variant $variant skipped: needs 90-point keypoints, $dir has none" \
                    "(extract them: set RAW_DIR=<videos>, or run extract_90_keypoints.py" \
                    "--input_dir <videos> --output_dir $dir)"
            else
                kept+=("$variant")
            fi
        done
        VARIANTS="${kept[*]}"
        [[ -n "$VARIANTS" ]] || { echo "error: no variant has keypoints to run on" >&2; return 2; }
    fi
    for variant in $VARIANTS; do
        [[ "${LAYOUT[$variant]}" != 90 ]] || DATA_DIR_65="${DATA_DIR_65:-$(data_dir_of 90)}"
    done
    for variant in $VARIANTS; do  # the data each variant reads
        dir="$(data_dir_of "${LAYOUT[$variant]}")"
        if [[ -z "$RAW_DIR" && ! -f "$dir/label2id.json" ]]; then
            echo "error: variant $variant: no keypoints in $dir (no label2id.json): set RAW_DIR" \
                "or DATA_DIR_${LAYOUT[$variant]}" >&2
            return 2
        fi
    done
}

extract_once() {  # each dataset folder in use, extracted with the largest layout read from it (65 is a prefix of 90)
    declare -A layout_of_dir=()
    local variant dir layout
    for variant in $VARIANTS; do
        layout="${LAYOUT[$variant]}" dir="$(data_dir_of "${LAYOUT[$variant]}")"
        if (( ${layout_of_dir[$dir]:-0} < layout )); then layout_of_dir[$dir]="$layout"; fi
    done
    for dir in "${!layout_of_dir[@]}"; do
        stage extract "${layout_of_dir[$dir]}-point keypoints from $RAW_DIR into $dir (videos extracted before are skipped)"
        run "$PY" extract_65_keypoints.py --input_dir "$RAW_DIR" --output_dir "$dir" --layout "${layout_of_dir[$dir]}" \
            --flip_users "$FLIP_USERS" ${EXTRACT_WORKERS:+--workers "$EXTRACT_WORKERS"}
        if [[ "$RUN_LOSO" == 1 ]]; then  # (re)link the folds: extraction may have added clips
            run "$PY" fix_loso.py --base_root "$dir" --holdouts "$HOLDOUTS"
        fi
    done
}

pipeline() {  # pipeline <variant> VAR=value...: run_end_to_end_pipeline.sh on the variant's config and data
    local variant="$1"; shift
    run env RAW_DIR= DEMO=0 SKIP_EXTRACT=1 CONFIG="$(config_of "$variant")" DATA_DIR="$(data_dir_of "${LAYOUT[$variant]}")" \
        HOLDOUTS="$HOLDOUTS" DATASET_NAME="$DATASET_NAME" OUTPUT_ROOT="$OUTPUT_ROOT" VENV="$VENV" "$@" \
        bash run_end_to_end_pipeline.sh
}

link_seedless_exports() {  # exports/{ptq,qat}_<prefix> -> FULL_SEED's: the reference's paths
    local prefix="$1" kind dir link
    for kind in PTQ QAT; do
        dir="$(run_tree "${kind}_LOSO_DIR" "${prefix}_seed$FULL_SEED")"
        link="$(run_tree "${kind}_LOSO_DIR" "$prefix")"
        if [[ -d "$dir" && ( -L "$link" || ! -e "$link" ) ]]; then
            ln -sfn "$(basename "$dir")" "$link"
            echo "$link -> $(basename "$dir") (seed $FULL_SEED)"
        fi
    done
}

collect_variant() {  # collect_results over the seeds of one variant, unless its summary is newer than every model
    local variant="$1" prefix; prefix="$(prefix_of "$1")"
    local table; table="$(run_tree RESULTS_DIR "$prefix")/summary_table.csv"
    if results_current "$table" "$LOSO_CHECKPOINTS" "$LOSO_EXPORTS" --path_contains "${prefix}_seed"; then
        echo "collect $variant: skipped, $table is newer than every model"
        return
    fi
    stage "$variant collect" "FP32 vs PTQ vs QAT over seeds $SEED_LIST"
    run "$PY" collect_results.py --run_evaluation --base_data_path "$(data_dir_of "${LAYOUT[$variant]}")" \
        --dataset_name "$DATASET_NAME" --output_root "$OUTPUT_ROOT" --seed_list "$SEED_LIST" --exp_prefix_base "$prefix" \
        --ptq_base_dir "$(run_tree PTQ_LOSO_DIR "${prefix}_seed{seed}")" \
        --qat_base_dir "$(run_tree QAT_LOSO_DIR "${prefix}_seed{seed}")" \
        $([[ "$HOLDOUTS" != all ]] && echo --holdouts "$HOLDOUTS") --no-console
}

summarize_variants() {  # variant x model: the ALL rows of every variant's summary_table.csv
    local pairs=() variant
    for variant in $VARIANTS; do pairs+=("$variant=$(prefix_of "$variant")"); done
    stage summary "variants compared (mean ± std over $( ((${#SEEDS[@]} > 1)) && echo seeds || echo holdouts))"
    "$PY" - "$RESULTS_ROOT" "${pairs[@]}" <<'PYTHON'
import csv
import sys
from pathlib import Path

from evaluation import csv_text, text_table
from results_report import mean_pm_std
from util import atomic_write_text

results = Path(sys.argv[1])
rows = []
for variant, prefix in (arg.split("=", 1) for arg in sys.argv[2:]):
    with open(results / prefix / "summary_table.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["holdout"] == "ALL":  # metrics.aggregate's mean over seeds (or over holdouts for one seed)
                rows.append({"variant": variant, "experiment_prefix": prefix, "model": r["model"], "n": int(r["n"]),
                             "std_over": r["std_over"], **{k: float(r[k]) if r[k] else None for k in
                                                          ("top1_pct", "top1_pct_std", "size_mb", "size_mb_std")}})
table = text_table(["variant", "model", "top-1 (%)", "size (MB)", "n"],
                   [[r["variant"], r["model"], mean_pm_std(r, "top1_pct", "{:.2f}"), mean_pm_std(r, "size_mb", "{:.3f}"),
                     r["n"]] for r in rows])
atomic_write_text(results / "variants_summary.csv", csv_text(rows))
atomic_write_text(results / "variants_summary.txt", table + "\n")
print(table)
print(f"wrote {results / 'variants_summary.csv'} and {results / 'variants_summary.txt'}")
PYTHON
}

# ----------------------------------------------------------------------------------------------- main
stage setup "Python environment ($VENV)"
run env VENV="$VENV" bash setup_env.sh
DATASET_NAME="${DATASET_NAME:-$("$PY" recipes.py | sed -n 's/^DATASET_NAME=//p')}"
LOSO_CHECKPOINTS="$(run_tree LOSO_CHECKPOINTS)" LOSO_EXPORTS="$(run_tree LOSO_EXPORTS)"
RESULTS_ROOT="$(run_tree RESULTS_DIR)"
read_variants
if [[ -n "$RAW_DIR" ]]; then extract_once; fi
for variant in $VARIANTS; do
    prefix="$(prefix_of "$variant")"
    if enabled "$RUN_LOSO"; then
        for seed in "${SEEDS[@]}"; do
            stage "$variant seed $seed" "LOSO, PTQ, QAT of ${prefix}_seed$seed (config $(config_of "$variant"))"
            pipeline "$variant" EXP_PREFIX="${prefix}_seed$seed" SEED="$seed" RUN_FULL_DATASET=0 RUN_COLLECT=0
        done
        link_seedless_exports "$prefix"
    fi
    if enabled "$RUN_FULL_DATASET"; then
        stage "$variant full" "full-dataset model ${prefix}_full and its PTQ/QAT (seed $FULL_SEED)"
        pipeline "$variant" EXP_PREFIX="$prefix" FULL_EXP_NAME="${prefix}_full" FULL_SEED="$FULL_SEED" RUN_LOSO=0
    fi
    if enabled "$RUN_LOSO" && enabled "$RUN_COLLECT"; then
        collect_variant "$variant"
    fi
done
if enabled "$RUN_LOSO" && enabled "$RUN_COLLECT"; then
    summarize_variants
fi
echo
echo "##### variants done in $((SECONDS / 60)) min $((SECONDS % 60)) s: $VARIANTS x seeds $SEED_LIST; results in $RESULTS_ROOT/"
