"""The app contract: a complete model card for every export mode, test vectors that regenerate byte for byte and
that a float32 port following docs/preprocessing_spec.md reproduces (their enrollment case: enrollment.py), and parity between the training pipeline +
Keras and predict_video's path (MediaPipe on the real video -> preprocessing -> TFLite) for every mode."""
import json
import shutil

import numpy as np
import pytest

import enrollment
import make_test_vectors
import predict_video
from config import load_config
from dataset import load_sample, load_split, make_dataset, read_label_names
from extraction import read_frames
from keypoints import get_layout
from model_functional import load_model
from preprocessing import model_inputs
from ptq_export import PTQ_FILES
from tflite_runtime import CARD_CONFIG_KEYS, TFLiteModel, resolve_config
from video_recognition import Recognizer, tracked_frames

VIDEO = "mlr511-videos/user01/G09/R01.mp4"          # 32 frames, the shortest of the shared videos
PICKLE = "mlr511-90kpts/all/G09/user01_G09_R01.pkl"  # the same video as stored keypoints


@pytest.fixture(scope="module")
def exports(ptq_exports) -> dict:
    """{mode: .tflite path}: every converter mode of the trained demo fold, each with its card (conftest)."""
    return {mode: ptq_exports / name for mode, name in PTQ_FILES.items()}


# ----------------------------------------------------------------------------------------------- model card
@pytest.mark.parametrize("mode", list(PTQ_FILES))
def test_card_is_complete(exports, trained_fold, mode):
    path = exports[mode]
    card = json.loads(path.with_suffix(".json").read_text())
    cfg, k = trained_fold.cfg, len(trained_fold.cfg["joint_idx"])
    assert card["mode"] == mode and card["sequence_length"] == 64
    # inputs and output: names, shapes, dtypes, quantization
    assert [(i["name"], i["shape"]) for i in card["inputs"]] == [("keypoints", [1, 64, k, 2]), ("attention_mask", [1, 64])]
    assert [(o["name"], o["shape"]) for o in card["outputs"]] == [("logits", [1, cfg["num_labels"]]),
                                                                  ("embedding", [1, cfg["d_model"]])]
    assert card["card_version"] == 6 and card["personalization"]["output_index"] == 1
    integer_io = mode == "int8_io"
    assert all((io["dtype"] == "int8") == integer_io and (io["quantization"]["scale"] > 0) == integer_io
               for io in card["inputs"] + card["outputs"])
    # keypoint layout: the MediaPipe landmark at every input position, in keypoints.Layout's order
    layout = get_layout(card["layout"])
    assert [p["input_index"] for p in card["input_keypoints"]] == list(range(k))
    assert [(p["part"], p["mediapipe_index"]) for p in card["input_keypoints"]] == [layout.points[i] for i in cfg["joint_idx"]]
    assert card["input_keypoints"][44]["name"] == "right_hand.wrist"
    # normalization groups (input positions) and rule, frame sampling, mirroring
    positions = sorted(i for idx in card["normalization"]["groups"].values() for i in idx)
    assert positions == list(range(k)) and list(card["normalization"]["groups"]) == list(cfg["groups"])
    assert "0.05" in card["normalization"]["rule"] and card["normalization"]["spec"] == "docs/preprocessing_spec.md"
    assert "linspace(0, T - 1, 64)" in card["frame_sampling"]["rule"] and "no horizontal flip" in card["mirroring"]
    assert card["resting_hands"] == {"cutoff": 0.0, "rule": "off"}  # the demo config does not use the rule
    assert card["dominant_hand"] == {"ratio": 0.0, "rule": "off"}   # nor the dominant-hand rule
    # labels: id -> class -> human name (label2name.json), and labels.txt beside the model
    names = read_label_names(trained_fold.data_path)
    assert names and card["classes"] == [{"id": i, "label": lab, "name": names[lab]} for i, lab in enumerate(card["labels"])]
    assert (path.parent / "labels.txt").read_text().split() == card["labels"]
    # training data/config/seed and the measured accuracy of this file
    assert card["config_path"] == str(trained_fold.config_path)
    assert card["training"]["data_path"] == str(trained_fold.data_path)
    assert card["training"]["fp32_training"]["seed"] == 42
    assert card["accuracy"]["top1"] == card["parity"]["tflite_top1"] and card["accuracy"]["clips"] == 30


def test_fp32_training_export_has_the_same_card(trained_fold):
    card = json.loads(trained_fold.tflite.with_suffix(".json").read_text())
    assert card["training"]["seed"] == 42 and card["training"]["holdout_user"] == "user01"
    assert card["accuracy"]["top1"] == card["parity"]["tflite_top1"] and len(card["input_keypoints"]) == 65


@pytest.mark.parametrize("mode", list(PTQ_FILES))
def test_evaluation_reads_the_config_from_the_card(exports, trained_fold, mode):
    from_card = resolve_config(exports[mode])
    assert all(from_card[key] == trained_fold.cfg[key] for key in CARD_CONFIG_KEYS)


# ----------------------------------------------------------------------------------------------- test vectors
@pytest.fixture(scope="module")
def vectors(exports, shared_data, tmp_path_factory) -> dict:
    """{mode: (path, vector)} for the real clip, written by the CLI."""
    out = tmp_path_factory.mktemp("vectors")
    make_test_vectors.main(["--models", *map(str, exports.values()), "--sample", str(shared_data / PICKLE),
                            "--output_dir", str(out)])
    return {mode: (make_test_vectors.vector_path(path, out), json.loads(make_test_vectors.vector_path(path, out).read_text()))
            for mode, path in exports.items()}


def test_vectors_regenerate_bit_identically(vectors, exports, shared_data, tmp_path):
    for mode, path in exports.items():
        shutil.copy(path, tmp_path / path.name)  # beside the model (the default), from a copy of it
        shutil.copy(path.with_suffix(".json"), tmp_path / path.with_suffix(".json").name)
    again = make_test_vectors.write_vectors([str(tmp_path / p.name) for p in exports.values()], str(shared_data / PICKLE))
    assert [p.read_bytes() for p in again] == [vectors[mode][0].read_bytes() for mode in exports]


@pytest.mark.parametrize("mode", list(PTQ_FILES))
def test_vector_content_is_the_pipeline_output(vectors, exports, trained_fold, shared_data, mode):
    _, vector = vectors[mode]
    raw = load_sample(shared_data / PICKLE)["keypoints"][:, :65]
    assert vector["model"]["mode"] == mode and vector["sample"] == {
        "file": "user01_G09_R01.pkl", "label": "G09", "user": "user01", "num_frames": 32, "layout": 65}
    np.testing.assert_array_equal(np.array(vector["raw_keypoints"], dtype=np.float32), raw)
    assert vector["dominant_hand_mirrored"] is False  # the rule is off: the kept frames as they were
    np.testing.assert_array_equal(np.array(vector["dominant_hand_canonical"], dtype=np.float32),
                                  np.array(vector["resting_hands_dropped"], dtype=np.float32)[vector["frame_indices"]])
    keypoints, mask = model_inputs(raw, trained_fold.cfg)
    np.testing.assert_array_equal(np.array(vector["model_input"]["keypoints"], dtype=np.float32), keypoints)
    np.testing.assert_array_equal(np.array(vector["model_input"]["attention_mask"], dtype=np.float32), mask)
    logits = TFLiteModel(exports[mode])(keypoints, mask)
    np.testing.assert_array_equal(np.array(vector["expected_output"]["logits"], dtype=np.float32), logits)
    assert vector["expected_output"]["top1"]["id"] == int(logits.argmax())
    assert vector["tolerance"]["logits_abs"] == pytest.approx(make_test_vectors.logit_tolerance(mode, logits))
    _, embedding, _ = TFLiteModel(exports[mode]).run_with_embedding(keypoints, mask)
    np.testing.assert_array_equal(np.array(vector["expected_output"]["embedding"], dtype=np.float32), embedding)


@pytest.mark.parametrize("mode", list(PTQ_FILES))
def test_vector_enrollment_case_is_enrollment_on_this_model(vectors, mode):
    """Enrollment clips of the held-out demo signer (the card's data_path) -> prototypes -> scores."""
    case = vectors[mode][1]["enrollment"]
    blocks = tuple(enrollment.Block(**b) for b in case["blocks"])
    assert [b.name for b in blocks] == ["embedding", "left_hand_shape", "right_hand_shape"]
    descriptors = np.array([c["descriptor"] for c in case["enroll_clips"]])
    embeddings = np.array([c["embedding"] for c in case["enroll_clips"]], dtype=np.float32)
    np.testing.assert_array_equal(descriptors[:, :blocks[0].size], embeddings)  # the embedding comes first
    ids = np.array([c["class_id"] for c in case["enroll_clips"]])
    prototypes = enrollment.build_prototypes(descriptors, ids, len(case["prototypes"]["counts"]), blocks=blocks)
    np.testing.assert_array_equal(prototypes.prototypes, np.array(case["prototypes"]["prototypes"], np.float32))
    np.testing.assert_array_equal(prototypes.center, np.array(case["prototypes"]["center"], np.float32))
    assert case["data"]["users"] == ["user01"] and len(case["test_clips"]) == 4
    for clip in case["test_clips"]:
        p = enrollment.score(np.array(clip["descriptor"]), np.array(clip["logits"], np.float32),
                             prototypes, enrollment.Params(**case["params"]))
        np.testing.assert_array_equal(p, np.array(clip["probabilities"]))
        assert p.sum() == pytest.approx(1) and int(p.argmax()) == clip["top1"]


def port_of_the_spec(raw: np.ndarray, groups: dict) -> np.ndarray:
    """docs/preprocessing_spec.md steps 2-5 written independently in float32 (as a phone would): (T, K, 2)."""
    kp = np.clip(raw[:, :, :2].astype(np.float32), 0, 1)
    out = kp.copy()
    for t in range(len(kp)):
        for idx in groups.values():
            points = kp[t, idx]
            detected = ~((points[:, 0] == 0) & (points[:, 1] == 0))
            if not detected.any():
                continue
            lo, hi = points[detected].min(axis=0), points[detected].max(axis=0)
            w, h = hi - lo
            pad = (np.float32(0.05) * w, np.float32(0.05) * w + (w - h) / 2) if w > h else \
                  (np.float32(0.05) * h + (h - w) / 2, np.float32(0.05) * h)
            start, end = np.clip(lo - pad, 0, 1), np.clip(hi + pad, 0, 1)
            span = end - start
            scaled = np.where(span > 0, (points - start) / np.where(span > 0, span, 1), points)
            out[t, np.asarray(idx)[detected]] = scaled[detected]
    return out


def test_a_float32_port_of_the_spec_meets_the_vector_tolerance(vectors, exports):
    """What an app developer does: read the groups from the card, port the rule, compare with the vector."""
    _, vector = vectors["fp32"]
    card = json.loads(exports["fp32"].with_suffix(".json").read_text())
    ported = port_of_the_spec(np.array(vector["raw_keypoints"], dtype=np.float32), card["normalization"]["groups"])
    expected = np.array(vector["normalized"], dtype=np.float32)
    assert np.abs(ported - expected).max() <= vector["tolerance"]["normalized_abs"]


# ----------------------------------------------------------------------------------------------- parity
@pytest.fixture(scope="module")
def video_rows(trained_fold, shared_data) -> np.ndarray:
    """predict_video's extraction of the real video: (T, 65, 3) keypoints, one row per frame."""
    layout = get_layout(trained_fold.cfg["layout"])
    return np.stack([f.row for f in tracked_frames(read_frames(shared_data / VIDEO), layout, 0.5, False)])


@pytest.fixture(scope="module")
def keras_logits(trained_fold, shared_data, tmp_path_factory) -> np.ndarray:
    """The same clip through the training pipeline: dataset.load_split + make_dataset + the saved Keras model."""
    root = tmp_path_factory.mktemp("one_clip")
    (root / "test" / "G09").mkdir(parents=True)
    (root / "test" / "G09" / "user01_G09_R01.pkl").symlink_to(shared_data / PICKLE)
    for name in ("label2id.json", "id2label.json"):
        shutil.copy(shared_data / "mlr511-90kpts" / name, root / name)
    data = load_split(root, "test", trained_fold.cfg)
    batch, _ = next(iter(make_dataset(data, trained_fold.cfg, batch_size=1)))
    return load_model(trained_fold.h5, trained_fold.cfg)(batch, training=False).numpy()[0]


def test_video_extraction_is_the_stored_clip(video_rows, shared_data):
    np.testing.assert_array_equal(video_rows, load_sample(shared_data / PICKLE)["keypoints"][:, :65])


@pytest.mark.parametrize("mode", list(PTQ_FILES))
def test_keras_pipeline_and_predict_video_path_agree(exports, video_rows, keras_logits, mode):
    prediction = Recognizer(exports[mode]).classify(video_rows)
    assert prediction.top1 == int(keras_logits.argmax())
    assert np.abs(prediction.logits - keras_logits).max() <= make_test_vectors.logit_tolerance(mode, keras_logits)


def test_predict_video_cli_gives_the_same_logits(trained_fold, shared_data, video_rows):
    """The whole CLI (its own MediaPipe run) on the training run's FP32 export."""
    result = predict_video.main(["--model", str(trained_fold.tflite), str(shared_data / VIDEO)])
    expected = Recognizer(trained_fold.tflite).classify(video_rows)
    np.testing.assert_array_equal(result["clips"][0].predictions[0].logits, expected.logits)
    assert load_config(trained_fold.config_path)["joint_idx"] == resolve_config(trained_fold.tflite)["joint_idx"]
