#!/usr/bin/env bash
# Every dataset, one after the other, through run_end_to_end_pipeline.sh with its 63-point config:
#
#   bash run_all_datasets_pipeline.sh            # every dataset with keypoints in data/
#   DRY_RUN=1 bash run_all_datasets_pipeline.sh  # say what would run, what is skipped; run nothing
#   DATASETS=lsa64 LSA64_RAW_DIR=LSA64/all bash run_all_datasets_pipeline.sh   # extract it first
#   EPOCHS=2 QAT_EPOCHS=1 bash run_all_datasets_pipeline.sh                    # a quick smoke run
#
# DATASETS: comma list, default arabic_asl,lsa64,karsl100,karsl502. Dataset <name> uses the config
# configs/<slug>-63kpts.yaml and the keypoints <DATA_ROOT>/<slug>-63kpts (DATA_ROOT default data;
# slug arabic-asl, lsa64, karsl100, karsl502) and writes <OUTPUT_ROOT>/<name>/{loso,full}/.
# Videos: with <NAME>_RAW_DIR set (ARABIC_ASL_RAW_DIR, LSA64_RAW_DIR, KARSL100_RAW_DIR,
# KARSL502_RAW_DIR) the pipeline first extracts 63 points from that folder, its layout (MLR511 tree,
# LSA64 or KArSL release) detected by layouts.py. karsl100 without keypoints is built from the
# karsl502 keypoints by build_karsl_subset.py (signs 71..170; KARSL100_MODE symlink|hardlink|copy,
# default symlink). A dataset with neither keypoints nor videos is skipped with one line saying so.
#
# HOLDOUTS defaults to all (every signer of each dataset). Every other setting of
# run_end_to_end_pipeline.sh (EPOCHS, LR, QAT_EPOCHS, PTQ_MODES, SEED, RUN_FULL_DATASET,
# OUTPUT_ROOT, FLIP_USERS, ...) is passed through; DATA_DIR, CONFIG, RAW_DIR and DATASET_NAME are
# set per dataset. Resumable like the pipeline. The first dataset that fails stops the run, with a
# message naming it.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

DATASETS="${DATASETS:-arabic_asl,lsa64,karsl100,karsl502}"
DATA_ROOT="${DATA_ROOT:-data}"
HOLDOUTS="${HOLDOUTS:-all}"
KARSL100_MODE="${KARSL100_MODE:-symlink}"
DRY_RUN="${DRY_RUN:-0}"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
unset DATA_DIR CONFIG CONFIG_PATH RAW_DIR DATASET_NAME   # set per dataset below, never inherited

PIPELINE_NAME=all-datasets STAGE_MARK="#####"
source pipeline_common.sh   # stage, skip, run, enabled; a failure names its stage

slug_of() { [[ "$1" == arabic_asl ]] && echo arabic-asl || echo "$1"; }   # name -> file names
raw_dir_of() { local var="${1^^}_RAW_DIR"; echo "${!var:-}"; }   # lsa64 -> $LSA64_RAW_DIR
has_keypoints() { [[ -f "$1/label2id.json" ]]; }
maybe() {  # run the command, or with DRY_RUN=1 only print it
    if enabled "$DRY_RUN"; then printf 'would run:'; printf ' %q' "$@"; echo; else run "$@"; fi
}

build_karsl100() {  # build_karsl100 <data dir>: from karsl502's keypoints; false if there are none
    local source="$DATA_ROOT/karsl502-63kpts"
    has_keypoints "$source" || return 1
    stage "karsl100" "build KArSL-100 (signs 71..170) from $source"
    maybe "$PY" build_karsl_subset.py --input_dir "$source" --output_dir "$1" --start 71 --end 170 \
        --mode "$KARSL100_MODE"
}

IFS=, read -ra names <<< "$DATASETS"
for name in "${names[@]}"; do   # every setting checked before anything runs
    case "$name" in
        arabic_asl|lsa64|karsl100|karsl502) ;;
        *) echo "error: DATASETS: unknown dataset '$name'" \
               "(known: arabic_asl, lsa64, karsl100, karsl502)" >&2
           exit 2 ;;
    esac
    raw="$(raw_dir_of "$name")"
    if [[ -n "$raw" && ! -d "$raw" ]]; then
        echo "error: ${name^^}_RAW_DIR=$raw: folder not found" >&2
        exit 2
    fi
done

ran=() skipped=()
for name in "${names[@]}"; do
    STAGE="$name"
    slug="$(slug_of "$name")"
    data="$DATA_ROOT/$slug-63kpts" config="configs/$slug-63kpts.yaml" raw="$(raw_dir_of "$name")"
    if ! has_keypoints "$data" && [[ -z "$raw" ]]; then
        if [[ "$name" != karsl100 ]] || ! build_karsl100 "$data"; then
            skip "$name" "no keypoints in $data and no ${name^^}_RAW_DIR videos"
            skipped+=("$name")
            continue
        fi
    fi
    what="$data${raw:+ (extracted from $raw)}, $config, holdouts $HOLDOUTS"
    stage "$name" "run_end_to_end_pipeline.sh: $what"
    maybe env DEMO=0 DATASET_NAME="$name" DATA_DIR="$data" CONFIG="$config" KEYPOINTS_COUNT=63 \
        RAW_DIR="$raw" HOLDOUTS="$HOLDOUTS" VENV="$VENV" bash run_end_to_end_pipeline.sh
    ran+=("$name")
done
echo
echo "##### all datasets: ${#ran[@]} $(enabled "$DRY_RUN" && echo "would run" || echo ran)" \
    "(${ran[*]:-none}), ${#skipped[@]} skipped (${skipped[*]:-none})"
