#!/usr/bin/env bash
# End-to-end pipeline, resumable, into <OUTPUT_ROOT>/<DATASET_NAME>/{loso,full}/:
#
#   environment (setup_env.sh) -> keypoints (demo generator, or extraction when RAW_DIR is set) -> LOSO splits
#   -> FP32 LOSO training -> PTQ -> QAT -> [full-dataset training -> its PTQ and QAT] -> collect_results
#
#   bash run_end_to_end_pipeline.sh                         # embedded demo: ~10 min on 2 CPU cores, no video needed
#   RAW_DIR=MLR511-ArabicSignLanguage-Dataset-MP4 bash run_end_to_end_pipeline.sh     # the real thing (80 epochs)
#   DATA_DIR=data/arabic-asl-90kpts bash run_end_to_end_pipeline.sh                     # real, keypoints already extracted
#   RUN_FULL_DATASET=0 bash run_end_to_end_pipeline.sh      # no full-dataset model (nor its PTQ/QAT)
#
# Modes. Neither RAW_DIR nor DATA_DIR set (or DEMO=1): the demo dataset (make_demo_dataset.py) is generated into
# DATA_DIR and trained with small budgets. Otherwise the seed's recipe, with the config
# configs/arabic-asl-<KEYPOINTS_COUNT>kpts.yaml. The budgets, seed, holdouts and dataset name of
# both modes come from recipes.py, or from the config's training: block where it sets them
# (`python config.py --recipe [--demo] CONFIG` prints them); every path and file
# name of the run tree comes from runs.py (`python runs.py paths ...`).
#
# Every setting is an environment variable (defaults: the "settings" block below, then recipes.py):
# RAW_DIR, DATA_DIR, CONFIG
# (or CONFIG_PATH), KEYPOINTS_COUNT, FLIP_USERS, EXTRACT_WORKERS, SKIP_EXTRACT, DATASET_NAME, OUTPUT_ROOT,
# HOLDOUTS (comma list or "all"; HOLDOUT_ONLY picks one), EXP_PREFIX, EPOCHS, LR, BATCH_SIZE, SEED, NO_VALIDATION,
# RUN_LOSO, RUN_FULL_DATASET, FULL_EPOCHS, FULL_LR, FULL_SEED, FULL_EXP_NAME, RUN_PTQ, PTQ_MODES, ONNX, ONNX_MODES, RUN_QAT,
# QAT_EPOCHS, QAT_BATCH_SIZE, QAT_LR, RUN_COLLECT, PTQ_LOSO_DIR, QAT_LOSO_DIR, PTQ_FULL_DIR, QAT_FULL_DIR, JOBS, VENV.
#
# The LOSO stages (training, PTQ, QAT) run the holdouts in JOBS parallel processes (default: one per CPU core), each
# with an equal share of the cores as TensorFlow threads and each output line prefixed with its holdouts.
#
# ONNX=1 makes the PTQ stages also write model_fp32.onnx (and model_int8.onnx: ONNX_MODES) beside the PTQ models
# (ptq_export.py --onnx_modes; docs/onnx.md): on by default for real data (about 2 % of a fold), off for the demo.
#
# Re-running is safe and cheap: a stage is skipped when its final artefacts exist (runs.py state decides, as it
# does for sweep.py: a trained model = final_model.h5, final_model_fp32.tflite + card and a successful training
# record; PTQ = the card of every PTQ_MODES model (and, with ONNX=1, of every ONNX_MODES model); QAT =
# qat_metadata.json; results = summary_table.csv newer than every model), and an interrupted training run continues
# from its last epoch (--resume). A training neither finished nor resumable runs with --overwrite: a
# successful record whose files are incomplete is replaced, once the new run succeeded.
# Changing a setting does not redo finished work: use another OUTPUT_ROOT or
# EXP_PREFIX, or delete the artefacts. A failing stage stops the pipeline with a message naming it (in a parallel
# stage, after the other holdouts finished).
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export PYTHONUNBUFFERED=1   # log lines in order, also through the per-fold prefixes of parallel stages

# ----------------------------------------------------------------------------------------------- settings
RAW_DIR="${RAW_DIR:-}"
DEMO="${DEMO:-$([[ -z "$RAW_DIR" && -z "${DATA_DIR:-}" ]] && echo 1 || echo 0)}"
KEYPOINTS_COUNT="${KEYPOINTS_COUNT:-65}"
if [[ "$DEMO" == 1 ]]; then
    DATA_DIR="${DATA_DIR:-data/demo-65kpts}"
    CONFIG="${CONFIG:-${CONFIG_PATH:-configs/demo-65kpts.yaml}}"
else
    DATA_DIR="${DATA_DIR:-data/arabic-asl-${KEYPOINTS_COUNT}kpts}"
    # 65 points: the recommended signer-independent recipe (docs/signer-independent.md);
    # CONFIG=configs/arabic-asl-65kpts.yaml gives the reference recipe
    recommended="configs/arabic-asl-${KEYPOINTS_COUNT}kpts-signer-independent.yaml"
    [[ -f "$recommended" ]] || recommended="configs/arabic-asl-${KEYPOINTS_COUNT}kpts.yaml"
    CONFIG="${CONFIG:-${CONFIG_PATH:-$recommended}}"
fi
FLIP_USERS="${FLIP_USERS:-}"              # signers mirrored at extraction (extract_65_keypoints.py --flip_users)
EXTRACT_WORKERS="${EXTRACT_WORKERS:-}"    # empty: the extractor's default (all cores)
SKIP_EXTRACT="${SKIP_EXTRACT:-0}"
OUTPUT_ROOT="${OUTPUT_ROOT:-${SIGNBART_OUTPUT_ROOT:-outputs}}"
EXP_PREFIX="${EXP_PREFIX:-}"
NO_VALIDATION="${NO_VALIDATION:-1}"
RUN_LOSO="${RUN_LOSO:-1}"
RUN_FULL_DATASET="${RUN_FULL_DATASET:-1}"
RUN_PTQ="${RUN_PTQ:-1}"
RUN_QAT="${RUN_QAT:-1}"
RUN_COLLECT="${RUN_COLLECT:-1}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 1)}"                  # LOSO folds run in this many parallel processes (each uses about one core)
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

# ----------------------------------------------------------------------------------------------- stage plumbing
PIPELINE_NAME=pipeline STAGE_MARK="==="
source pipeline_common.sh   # stage, skip, run, enabled, results_current; a failure names its stage

fold_states() {  # fold_states <train|ptq|qat> [flags] <holdout=folder...>: "<holdout> done|resume|todo" lines
    "$PY" runs.py state "$@"   # runs.py decides what is done (sweep.py asks it too): what each stage writes last
}
holdouts_in() { awk -v s="$1" '$2 == s {print $1}' <<< "$2" | paste -sd, -; }  # holdouts_in <state> <fold_states output>
ptq_flags() {  # the PTQ modes (and ONNX modes, with ONNX=1): what the PTQ stages write and what marks them done
    echo --modes "$PTQ_MODES"
    enabled "$ONNX" && echo --onnx_modes "$ONNX_MODES"
    return 0
}
join() { local IFS=,; echo "$*"; }

run_folds() {  # run_folds <holdouts> <command...>: the command + --holdouts <group>, JOBS groups of holdouts at once
    local holdouts="$1" users groups=() pids=() pid i status=0; shift
    IFS=, read -ra users <<< "$holdouts"
    local n=$((JOBS < ${#users[@]} ? JOBS : ${#users[@]}))
    if ((n <= 1)); then run "$@" --holdouts "$holdouts"; return; fi
    for i in "${!users[@]}"; do groups[i % n]+="${groups[i % n]:+,}${users[i]}"; done
    # TensorFlow's thread pools default to every core, and n such processes on the same cores get in each other's
    # way: share the cores out instead (README, "Speed, size and memory": 1.38x the folds per hour on 2 cores).
    local threads=$(( $(nproc 2>/dev/null || echo 1) / n )); ((threads >= 1)) || threads=1
    for i in "${!groups[@]}"; do  # each group's output is prefixed with its holdouts
        { export TF_NUM_INTRAOP_THREADS="${TF_NUM_INTRAOP_THREADS:-$threads}" TF_NUM_INTEROP_THREADS="${TF_NUM_INTEROP_THREADS:-$threads}"
          run "$@" --holdouts "${groups[i]}" 2>&1 | sed -u "s/^/[${groups[i]}] /"; } &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    return "$status"
}

loso_ckpt() { local v="LOSO_CKPT_$1"; echo "${!v}"; }      # <holdout> -> its checkpoint folder

optional_flags() {  # flags shared by both trainings: validation switch and batch size
    enabled "$NO_VALIDATION" && echo --no_validation
    [[ -n "$BATCH_SIZE" ]] && echo --batch_size "$BATCH_SIZE"
    return 0
}

# ----------------------------------------------------------------------------------------------- stages
setup_environment() {
    stage setup "Python environment ($VENV)"
    run env VENV="$VENV" bash setup_env.sh
}

prepare_keypoints() {
    if enabled "$DEMO"; then
        if [[ -f "$DATA_DIR/label2id.json" ]]; then
            skip keypoints "demo dataset already in $DATA_DIR"
        else
            stage keypoints "generate the demo dataset"
            run "$PY" make_demo_dataset.py --output_dir "$DATA_DIR"
        fi
    elif [[ -n "$RAW_DIR" ]] && ! enabled "$SKIP_EXTRACT"; then
        stage keypoints "extract $KEYPOINTS_COUNT-point keypoints from $RAW_DIR (videos extracted before are skipped)"
        run "$PY" extract_65_keypoints.py --input_dir "$RAW_DIR" --output_dir "$DATA_DIR" --layout "$KEYPOINTS_COUNT" \
            --flip_users "$FLIP_USERS" ${EXTRACT_WORKERS:+--workers "$EXTRACT_WORKERS"}
        EXTRACTED_NOW=1
    else
        skip keypoints "using the extracted keypoints in $DATA_DIR"
    fi
    if [[ ! -f "$DATA_DIR/label2id.json" ]]; then
        STAGE=keypoints
        echo "error: $DATA_DIR/label2id.json not found: set RAW_DIR (videos) or DATA_DIR (an extracted dataset)" >&2
        return 2
    fi
}

make_loso_splits() {
    local user missing=()
    for user in "${USERS[@]}"; do
        [[ -d "${DATA_DIR}_LOSO_$user/train" && -d "${DATA_DIR}_LOSO_$user/test" ]] || missing+=("$user")
    done
    if [[ ${#missing[@]} -eq 0 && -z "${EXTRACTED_NOW:-}" ]]; then
        skip splits "LOSO folds ${DATA_DIR}_LOSO_{$(join "${USERS[@]}")} exist"
        return
    fi
    stage splits "LOSO folds for $(join "${USERS[@]}")"
    run "$PY" fix_loso.py --base_root "$DATA_DIR" --holdouts "$(join "${USERS[@]}")"
}

train_loso() {
    local user folds=() states fresh resume
    for user in "${USERS[@]}"; do folds+=("$user=$(loso_ckpt "$user")"); done
    states="$(fold_states train "${folds[@]}")"
    fresh="$(holdouts_in todo "$states")" resume="$(holdouts_in resume "$states")"
    if [[ -z "$fresh$resume" ]]; then
        skip train_loso "FP32 models of $(join "${USERS[@]}") exist"
        return
    fi
    local common=(--config_path "$CONFIG" --base_data_path "$DATA_DIR" --epochs "$EPOCHS" --lr "$LR" --seed "$SEED"
                  --dataset_name "$DATASET_NAME" --output_root "$OUTPUT_ROOT" --exp_prefix "$EXP_PREFIX"
                  $(optional_flags))
    if [[ -n "$resume" ]]; then
        stage train_loso "continue the interrupted FP32 training of $resume"
        run_folds "$resume" "$PY" train_loso_functional.py "${common[@]}" --resume
    fi
    if [[ -n "$fresh" ]]; then
        stage train_loso "FP32 training of $fresh ($EPOCHS epochs)"
        run_folds "$fresh" "$PY" train_loso_functional.py "${common[@]}" --overwrite
    fi
}

pending_users() {  # pending_users <ptq|qat> <export base> [flags]: holdouts whose export folder is not complete
    local stage="$1" base="$2" user folds=() states; shift 2
    for user in "${USERS[@]}"; do folds+=("$user=$base/$user"); done
    states="$(fold_states "$stage" "$@" "${folds[@]}")" || return   # a failed check is not "nothing to do"
    holdouts_in todo "$states"
}

quantize_loso() {
    local todo
    if enabled "$RUN_PTQ"; then
        todo="$(pending_users ptq "$PTQ_LOSO_DIR" $(ptq_flags))"
        if [[ -z "$todo" ]]; then skip ptq_loso "PTQ models in $PTQ_LOSO_DIR exist"
        else
            stage ptq_loso "PTQ ($PTQ_MODES$(enabled "$ONNX" && echo ", ONNX $ONNX_MODES")) of $todo"
            run_folds "$todo" "$PY" ptq_export_batch.py --config_path "$CONFIG" --base_data_path "$DATA_DIR" \
                --exp_prefix "$EXP_PREFIX" --dataset_name "$DATASET_NAME" --output_root "$OUTPUT_ROOT" \
                --output_base_dir "$PTQ_LOSO_DIR" --seed "$SEED" $(ptq_flags)
        fi
    fi
    if enabled "$RUN_QAT"; then
        todo="$(pending_users qat "$QAT_LOSO_DIR")"
        if [[ -z "$todo" ]]; then skip qat_loso "QAT models in $QAT_LOSO_DIR exist"
        else
            stage qat_loso "QAT of $todo ($QAT_EPOCHS epochs)"
            run_folds "$todo" "$PY" train_loso_functional_qat_batch.py --config_path "$CONFIG" \
                --base_data_path "$DATA_DIR" --exp_prefix "$EXP_PREFIX" --dataset_name "$DATASET_NAME" \
                --output_root "$OUTPUT_ROOT" --output_base_dir "$QAT_LOSO_DIR" --batch_size "$QAT_BATCH_SIZE" \
                --qat_epochs "$QAT_EPOCHS" --lr "$QAT_LR" --seed "$SEED" $(enabled "$NO_VALIDATION" && echo --no_validation)
        fi
    fi
}

train_full() {
    local ckpt="$FULL_CKPT"
    local flags=(--config_path "$CONFIG" --base_data_path "$DATA_DIR" --exp_name "$FULL_EXP_NAME"
                 --epochs "$FULL_EPOCHS" --lr "$FULL_LR" --seed "$FULL_SEED" --dataset_name "$DATASET_NAME"
                 --output_root "$OUTPUT_ROOT" $(optional_flags))
    local state; state="$(fold_states train "full=$ckpt")"
    if [[ "$state" == "full done" ]]; then
        skip train_full "full-dataset model $ckpt exists"
    elif [[ "$state" == "full resume" ]]; then
        stage train_full "continue the interrupted full-dataset training"
        run "$PY" train_full_dataset.py "${flags[@]}" --resume
    else
        stage train_full "full-dataset training ($FULL_EPOCHS epochs)"
        run "$PY" train_full_dataset.py "${flags[@]}" --overwrite
    fi
}

quantize_full() {
    local checkpoint="$FULL_CKPT/$FINAL_MODEL"
    if ! enabled "$RUN_PTQ"; then :
    elif [[ "$(fold_states ptq $(ptq_flags) "full=$PTQ_FULL_DIR")" == "full done" ]]; then skip ptq_full "PTQ models in $PTQ_FULL_DIR exist"
    else
        stage ptq_full "PTQ ($PTQ_MODES$(enabled "$ONNX" && echo ", ONNX $ONNX_MODES")) of the full-dataset model"
        run "$PY" ptq_export.py --config_path "$CONFIG" --checkpoint "$checkpoint" --data_path "$DATA_DIR" \
            --output_dir "$PTQ_FULL_DIR" --seed "$FULL_SEED" $(ptq_flags)
    fi
    if ! enabled "$RUN_QAT"; then :
    elif [[ "$(fold_states qat "full=$QAT_FULL_DIR")" == "full done" ]]; then skip qat_full "QAT models in $QAT_FULL_DIR exist"
    else
        stage qat_full "QAT of the full-dataset model ($QAT_EPOCHS epochs)"
        run "$PY" train_loso_functional_qat.py --config_path "$CONFIG" --data_path "$DATA_DIR" \
            --checkpoint "$checkpoint" --output_dir "$QAT_FULL_DIR" --batch_size "$QAT_BATCH_SIZE" \
            --qat_epochs "$QAT_EPOCHS" --lr "$QAT_LR" --seed "$FULL_SEED" --no_validation
    fi
}

collect() {
    local table="$RESULTS_DIR/summary_table.csv" dirs=() user
    for user in "${USERS[@]}"; do dirs+=("$(loso_ckpt "$user")" "$PTQ_LOSO_DIR/$user" "$QAT_LOSO_DIR/$user"); done
    if results_current "$table" "${dirs[@]}"; then
        skip collect "$table is newer than every model"
        return
    fi
    stage collect "evaluate every LOSO model on its held-out signer; report, CSVs, confusion matrices"
    run "$PY" collect_results.py --run_evaluation --base_data_path "$DATA_DIR" --dataset_name "$DATASET_NAME" \
        --output_root "$OUTPUT_ROOT" --exp_prefix "$EXP_PREFIX" --holdouts "$(join "${USERS[@]}")" \
        --ptq_base_dir "$PTQ_LOSO_DIR" --qat_base_dir "$QAT_LOSO_DIR"
}

app_model() {  # the model to ship: the full-dataset one if trained, else the first holdout's; QAT > PTQ > FP32
    local candidate
    for candidate in "$QAT_FULL_DIR/$QAT_MODEL" "$PTQ_FULL_DIR/$PTQ_MODEL" \
                     "$FULL_CKPT/$FP32_TFLITE" \
                     "$QAT_LOSO_DIR/${USERS[0]}/$QAT_MODEL" "$PTQ_LOSO_DIR/${USERS[0]}/$PTQ_MODEL" \
                     "$(loso_ckpt "${USERS[0]}")/$FP32_TFLITE"; do
        [[ -f "$candidate" ]] && { echo "$candidate"; return; }
    done
    echo "(none)"
}

print_outputs() {
    local report; report="$(ls -t "$RESULTS_DIR"/experiment_results_*.txt 2>/dev/null | head -1 || true)"
    echo
    echo "=== done in $((SECONDS / 60)) min $((SECONDS % 60)) s: $DATASET_NAME, holdouts $(join "${USERS[@]}")"
    if [[ -n "$report" ]]; then
        echo "report           $report"
        echo "CSV tables       $RESULTS_DIR/{summary_table,per_class_accuracy,model_info}.csv"
        echo "plots            $RESULTS_DIR/confusion_matrices/*.png, $LOSO_RUNS/out-imgs/<experiment>/training_curves.png"
    fi
    if enabled "$RUN_LOSO"; then
        echo "LOSO models      $LOSO_RUNS/checkpoints/, $PTQ_LOSO_DIR/, $QAT_LOSO_DIR/ (one folder per holdout)"
    fi
    echo "app model        $(app_model)"
    echo "                 copy it, with labels.txt and the .json card beside it, into the app's assets"
}

# ----------------------------------------------------------------------------------------------- main
setup_environment
STAGE=settings
# EPOCHS, LR, BATCH_SIZE, QAT_*, PTQ_MODES, ONNX_MODES, SEED, HOLDOUTS, DATASET_NAME (unless set); the config's
# training: block supplies EPOCHS, LR and BATCH_SIZE when it sets them
defaults_from "$PY" config.py --recipe $(enabled "$DEMO" && echo --demo) "$CONFIG"
HOLDOUTS="${HOLDOUT_ONLY:-$HOLDOUTS}"
FULL_EPOCHS="${FULL_EPOCHS:-$EPOCHS}"
FULL_LR="${FULL_LR:-$LR}"
FULL_SEED="${FULL_SEED:-$SEED}"
prepare_keypoints
STAGE=holdouts
# a comma list, or "all" = every signer in $DATA_DIR/all
holdout_list="$("$PY" runs.py holdouts "$HOLDOUTS" "$DATA_DIR")"
read -ra USERS <<< "$holdout_list"
STAGE=paths   # the run tree: LOSO_RUNS, PTQ_LOSO_DIR, ..., FULL_CKPT, LOSO_CKPT_<user>, file names
defaults_from "$PY" runs.py paths --output_root "$OUTPUT_ROOT" --dataset_name "$DATASET_NAME" \
    --exp_prefix "$EXP_PREFIX" --holdouts "$(join "${USERS[@]}")" \
    --full_exp_name "${FULL_EXP_NAME:-}" --ptq_modes "$PTQ_MODES"
echo "pipeline: $DATASET_NAME from $DATA_DIR, config $CONFIG, holdouts $(join "${USERS[@]}"), outputs in $OUTPUT_ROOT/$DATASET_NAME"

if enabled "$RUN_LOSO"; then
    make_loso_splits
    train_loso
    quantize_loso
fi
if enabled "$RUN_FULL_DATASET"; then
    train_full
    quantize_full
else
    skip train_full "RUN_FULL_DATASET=0 (so no full-dataset PTQ/QAT either)"
fi
if enabled "$RUN_LOSO" && enabled "$RUN_COLLECT"; then
    collect
fi
print_outputs
