"""The attention_mask input is float32. An app that copies an int32 (or int64) mask's bytes into it
feeds 1.4e-45 (the float32 whose bits are int32 1) on valid frames: every frame is masked, and the
model answers one class, the same for every clip (docs/deploy.md, "The mask is float32").

    .venv/bin/python -m pytest tests/test_mask_dtype.py -q -s -p no:cacheprovider  # the figures
"""
import numpy as np

from tflite_runtime import TFLiteModel, read_model_card


def test_mask_is_float32_and_int32_bytes_mask_every_frame(trained_fold):
    from evaluation import load_eval_set
    card = read_model_card(trained_fold.tflite)
    assert {i["name"]: i["dtype"] for i in card["inputs"]} == {"keypoints": "float32",
                                                                "attention_mask": "float32"}
    model = TFLiteModel(trained_fold.tflite)
    clips = load_eval_set(trained_fold.data_path, "test", trained_fold.cfg)
    as_float, _ = model.predict(clips.keypoints, clips.masks)
    int_bytes = clips.masks.astype(np.int32).view(np.float32)      # int32 bytes read as float32
    assert int_bytes.max() == np.float32(1.4e-45)
    as_int, _ = model.predict(clips.keypoints, int_bytes)
    all_masked, _ = model.predict(clips.keypoints, np.zeros_like(clips.masks))
    acc = lambda logits: float(np.mean(logits.argmax(1) == clips.targets))  # noqa: E731
    classes = np.unique(as_int.argmax(1))
    print(f"\n{len(clips)} clips: top-1 float32 mask {acc(as_float):.1%}, int32 bytes "
          f"{acc(as_int):.1%} (classes predicted {classes.tolist()}); float32 mask predicts "
          f"{len(np.unique(as_float.argmax(1)))} classes; max |logit(int32 bytes) - "
          f"logit(all-zero mask)| {np.abs(as_int - all_masked).max():.2e}; max spread of "
          f"int32-bytes logits over clips {np.ptp(as_int, axis=0).max():.2e}")
    assert len(classes) == 1                                        # one answer for every clip
    np.testing.assert_allclose(as_int, all_masked, atol=1e-5)      # = nothing valid
    np.testing.assert_allclose(as_int, as_int[:1].repeat(len(as_int), 0), atol=1e-5)  # no input
