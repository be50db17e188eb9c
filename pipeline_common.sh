# Stage plumbing shared by run_end_to_end_pipeline.sh and run_end_to_end_variants.sh (sourced, not run).
# The sourcing script sets PIPELINE_NAME (named in the failure message) and STAGE_MARK (stage header prefix).
STAGE="setup"
if [[ -n "${FLIPPED_DIR:-}" ]]; then  # the reference's flipped video copy: refused, not ignored
    echo "error: FLIPPED_DIR is not used (no flipped copy of the videos is made): unset it, set" \
        "FLIP_USERS=<comma list of the signers to mirror> (docs/data.md)" >&2
    exit 2
fi
on_error() {  # once, in the main shell (command substitutions and subshells inherit the trap too)
    [[ $BASHPID == "$$" ]] && echo "$PIPELINE_NAME FAILED in stage [$STAGE] (exit $1); its log is above. Fix the cause and re-run the same command: finished stages are skipped." >&2
}
trap 'on_error $?' ERR

stage() { STAGE="$1"; echo; echo "$STAGE_MARK [$STAGE] $(date +%T) $2"; }
skip() { echo; echo "$STAGE_MARK [$1] skipped: $2"; }
run() { printf '+'; printf ' %q' "$@"; echo; "$@"; }   # log the command, copy-pastable
enabled() { [[ "$1" == 1 ]]; }
defaults_from() {  # defaults_from <command...>: it prints NAME=value lines; each sets an unset NAME
    local out line name
    out="$("$@")"
    while IFS= read -r line; do
        name="${line%%=*}"
        [[ -n "${!name:-}" ]] || printf -v "$name" '%s' "${line#*=}"
    done <<< "$out"
}
results_current() {  # results_current <table> <folder...> [--path_contains S]: the table exists and no .tflite there is newer
    [[ "$("$PY" runs.py results_current "$@")" == yes ]]
}
