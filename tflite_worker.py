"""Run one .tflite model in one TFLite runtime (or a .onnx in ONNX Runtime) on padded clips and save its
logits: the worker of check_runtimes.py.

It needs only numpy and an interpreter: the pinned ai-edge-litert (`--interpreter litert`), or
`tf.lite.Interpreter` of whatever TensorFlow the running Python has (`--interpreter tensorflow`),
e.g. the side venvs that `bash setup_env.sh --runtimes` creates with the older TensorFlow Lite
releases that mobile apps ship. It imports only tflite_runtime (numpy + the interpreter) and runs
(numpy), never the TensorFlow 2.19 modules of the project. check_runtimes.py starts one per runtime
for all its models (`--job` once per model: the runtime is imported once), in order; a runtime that
aborts on a model (some old kernels do) ends only this process, and check_runtimes.py starts another
for the models after it.

    .venv-tflite-2.12/bin/python tflite_worker.py --interpreter tensorflow \\
        --model model_int8.tflite --clips clips.npz --output logits.npz
    .venv-tflite-2.12/bin/python tflite_worker.py --interpreter tensorflow \\
        --job a.tflite clips.npz a.npz --job b.tflite clips.npz b.npz

--clips: an .npz with `keypoints` (N, T, K, 2) and `attention_mask` (N, T) float32 (padded clips as
the app feeds them). --output: an .npz with `runtime` ("<package> <version>"), `stage` ("ok", "load"
or "run"), `error` (the interpreter's first message line, "" when ok), `logits` (N, C) float32,
`embedding` (N, D) float32 (the model's second output; (N, 0) for a model without one) and
`invoke_seconds` (N,). Exit code 0 when the model ran, 1 when it failed to load or run (the output
still says why), 2 on bad arguments. With --job, each output is written (atomically) as soon as its
model is done, and the exit code is 1 when any of them failed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from tflite_runtime import INTERPRETERS

ONNX_INTERPRETER = "onnxruntime"  # a .onnx in ONNX Runtime (onnx_runtime.ONNXModel), this venv only


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interpreter", choices=(*INTERPRETERS, ONNX_INTERPRETER), default="litert",
                    help="litert: ai_edge_litert.interpreter; tensorflow: tf.lite.Interpreter; "
                         "onnxruntime: a .onnx in ONNX Runtime (default: litert)")
    ap.add_argument("--model", help="the .tflite (or, with onnxruntime, .onnx) file")
    ap.add_argument("--clips", help=".npz with keypoints (N, T, K, 2) and attention_mask (N, T)")
    ap.add_argument("--output", help=".npz to write (see above)")
    ap.add_argument("--job", nargs=3, action="append", default=[], metavar=("MODEL", "CLIPS", "OUTPUT"),
                    help="one model to run, in order (repeat; instead of --model/--clips/--output)")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads (default: 1)")
    args = ap.parse_args(argv)
    single = [args.model, args.clips, args.output]
    if any(single) and not all(single):
        ap.error("--model, --clips and --output go together")
    args.jobs = args.job + ([single] if all(single) else [])
    if not args.jobs:
        ap.error("name a model: --model/--clips/--output or --job")
    return args


def runtime_version(interpreter: str) -> str:
    """'ai-edge-litert 2.3.0', 'tensorflow 2.12.0' or 'onnxruntime 1.32.0': the package whose kernels ran the
    model."""
    if interpreter == ONNX_INTERPRETER:
        from onnx_runtime import runtime_version as onnx_version
        return onnx_version()
    if interpreter == "litert":
        from importlib.metadata import version
        return f"ai-edge-litert {version('ai-edge-litert')}"
    import tensorflow as tf
    return f"tensorflow {tf.__version__}"


def first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def run(args, model_path: str, clips_path: str) -> dict:
    """Load and run the model; the result dict is what goes into its output."""
    from tflite_runtime import TFLiteModel
    clips = np.load(clips_path)
    keypoints, masks = clips["keypoints"], clips["attention_mask"]
    result = {"runtime": runtime_version(args.interpreter), "stage": "load", "error": "",
              "logits": np.zeros((0, 0), np.float32), "embedding": np.zeros((0, 0), np.float32),
              "invoke_seconds": np.zeros(0)}
    try:
        if args.interpreter == ONNX_INTERPRETER:
            from onnx_runtime import ONNXModel
            model = ONNXModel(model_path, num_threads=args.num_threads)
        else:
            model = TFLiteModel(model_path, num_threads=args.num_threads, interpreter=args.interpreter)
    except Exception as e:  # noqa: BLE001 - any interpreter failure is the answer we report
        return result | {"error": first_line(e)}
    try:
        if model.has_embedding:
            logits, embedding, seconds = model.predict_with_embedding(keypoints, masks)
        else:
            (logits, seconds), embedding = model.predict(keypoints, masks), np.zeros((len(keypoints), 0))
    except Exception as e:  # noqa: BLE001
        return result | {"stage": "run", "error": first_line(e)}
    return result | {"stage": "ok", "logits": logits.astype(np.float32),
                     "embedding": embedding.astype(np.float32), "invoke_seconds": seconds}


def save(path: str, result: dict) -> None:
    """np.savez to a temporary name, then renamed: an output that exists is complete (the caller reads
    a missing output as the model this worker was running when it died)."""
    tmp = Path(path).with_name(Path(path).name + ".part.npz")
    np.savez(tmp, **result)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    failed = 0
    for model, clips, output in args.jobs:
        result = run(args, model, clips)
        save(output, result)
        if result["stage"] != "ok":
            failed += 1
            print(f"{model}: {result['stage']} failed in {result['runtime']}: {result['error']}",
                  file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
