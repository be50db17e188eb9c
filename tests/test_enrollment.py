"""Few-shot enrollment (enrollment.py) and the export's second output.

Numpy: L2 normalization, prototypes (normalized mean of normalized embeddings; a sign without clips is not
enrolled), the blend (sums to 1, falls back to the classifier for signs not enrolled and when none is),
the enrollment check, prototype files and their one-line errors.
Exports of the trained demo fold in every PTQ mode: logits at index 0 and the embedding at index 1 (output
details and signature runner), logits bit-identical to a logits-only conversion, the embedding equal to Keras'
`last_valid_token` output within each mode's bound, the card's personalization block, and the enrollment case
of the test vectors reproduced by enrollment.py and by an independent float32 port of docs/personalization.md.
The QAT exports are checked in test_qat.py, the old TFLite runtimes in test_runtimes.py."""
import json

import numpy as np
import pytest

import enrollment
from enrollment import (ModelKey, Params, Prototypes, build_prototypes, check_enrollment, descriptor_blocks,
                        normalize, score)
from util import UserError

C, D = 5, 8


def key(**changes) -> ModelKey:
    fields = {"sha256": "ab" * 32, "layout": 65, "num_keypoints": 65, "num_labels": C, "embedding_size": D}
    return ModelKey(**fields | changes)


@pytest.fixture
def clips():
    """Embeddings of 3 enrolled signs (0: 3 clips, 1: 2 clips, 3: 1 clip) around distinct directions."""
    rng = np.random.default_rng(0)
    centers = np.eye(D)[:C] * 4
    labels = np.array([0, 0, 0, 1, 1, 3])
    embeddings = centers[labels] + rng.normal(scale=0.5, size=(len(labels), D))
    return embeddings.astype(np.float32), labels


# ----------------------------------------------------------------------------------------------- the algorithm
def test_normalize_gives_unit_rows_and_keeps_a_zero_vector():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]])
    y = normalize(x)
    np.testing.assert_allclose(y[0], [0.6, 0.8])
    assert np.array_equal(y[1], [0, 0]) and y[2, 0] == pytest.approx(1e-30 / enrollment.EPS)
    assert y.dtype == np.float64


def test_prototype_is_the_normalized_mean_of_normalized_clips(clips):
    embeddings, labels = clips
    protos = build_prototypes(embeddings, labels, C)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = unit[:3].mean(axis=0)
    np.testing.assert_allclose(protos.prototypes[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert protos.prototypes.dtype == np.float32 and protos.prototypes.shape == (C, D)
    assert protos.counts.tolist() == [3, 2, 0, 1, 0] and protos.enrolled.tolist() == [True, True, False, True, False]
    assert not protos.prototypes[[2, 4]].any()                                  # not enrolled: zero rows
    scaled = embeddings * np.array([10, 1, 1, 1, 1, 1], np.float32)[:, None]    # a clip's scale does not count
    np.testing.assert_allclose(build_prototypes(scaled, labels, C).prototypes, protos.prototypes, atol=1e-6)


def test_bad_clip_arrays_are_refused(clips):
    embeddings, labels = clips
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 5\)"):
        build_prototypes(embeddings, labels + 2, C)
    with pytest.raises(ValueError, match="descriptors must be"):
        build_prototypes(embeddings[0], labels[:1], C)
    with pytest.raises(ValueError, match="do not fit the model"):
        build_prototypes(embeddings, labels, C, key(embedding_size=D + 1))


def test_score_sums_to_one_and_falls_back_to_the_classifier(clips):
    embeddings, labels = clips
    protos = build_prototypes(embeddings, labels, C)
    rng = np.random.default_rng(1)
    logits, query = rng.normal(size=(4, C)), rng.normal(size=(4, D))
    p = score(query, logits, protos)
    s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert p.shape == (4, C) and np.allclose(p.sum(axis=1), 1, atol=1e-12) and (p >= 0).all()
    np.testing.assert_allclose(p[:, [2, 4]], s[:, [2, 4]], rtol=1e-12)        # signs not enrolled: s_c
    np.testing.assert_allclose(p[:, [0, 1, 3]].sum(axis=1), s[:, [0, 1, 3]].sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(score(query[2], logits[2], protos), p[2], rtol=1e-12)   # one clip: (C,)
    nobody = Prototypes(np.zeros((C, D), np.float32), np.zeros(C, np.int64), descriptor_blocks(D), np.zeros(D, np.float32))
    np.testing.assert_allclose(score(query, logits, nobody), s, rtol=1e-12)   # no sign enrolled: p = s
    np.testing.assert_allclose(score(query, logits, protos, Params(alpha=0.0)), s, rtol=1e-12)


def test_score_follows_the_rule_step_by_step(clips):
    embeddings, labels = clips
    protos, params = build_prototypes(embeddings, labels, C), Params(tau=10.0, alpha=0.5)
    logits = np.array([0.2, 1.0, 3.0, -1.0, 0.0])
    query = embeddings[0] + 0.1
    s = np.exp(logits) / np.exp(logits).sum()
    cos = [float(np.dot(query, protos.prototypes[c]) / np.linalg.norm(query)) for c in (0, 1, 3)]
    q = np.exp(10 * np.array(cos)) / np.exp(10 * np.array(cos)).sum()
    mass = s[[0, 1, 3]].sum()
    expected = s.copy()
    expected[[0, 1, 3]] = 0.5 * mass * q + 0.5 * s[[0, 1, 3]]
    np.testing.assert_allclose(score(query, logits, protos, params), expected, rtol=1e-6)
    assert np.argmax(score(query, logits, protos, params)) == 2                  # sign 2 is not enrolled
    assert score(query, logits, protos, Params(alpha=1.0))[0] > s[0]            # looks like sign 0: raised


def test_score_refuses_shapes_that_do_not_fit(clips):
    protos = build_prototypes(*clips, C)
    with pytest.raises(ValueError, match="do not fit prototypes"):
        score(np.zeros(D), np.zeros(C + 1), protos)


def test_check_enrollment_names_a_clip_that_looks_like_another_sign(clips):
    embeddings, labels = clips
    names = ["G01 (Hi)", "G02 (Please)", "G03", "G04 (Arabic)", "G05"]
    assert check_enrollment(embeddings, labels, C, names) == []
    wrong = embeddings.copy()
    wrong[2] = embeddings[3] * 1.1                                              # a G02 clip filed under G01
    warnings = check_enrollment(wrong, labels, C, names)
    assert len(warnings) == 1 and warnings[0].startswith("enrollment clip 2 of G01 (Hi) looks like G02 (Please)")
    near = embeddings.copy()
    near[5] = embeddings[0] + 0.01                                              # G04's only clip is a G01 clip
    warnings = check_enrollment(near, labels, C, names)
    assert any(w.startswith("the only enrollment clip of G04 (Arabic) (clip 5) looks like G01 (Hi)")
               for w in warnings)
    assert check_enrollment(near, labels, C, names, threshold=1.01) == [w for w in warnings if "only" not in w]


# ----------------------------------------------------------------------------------------------- files
def test_prototype_file_round_trip_is_exact_and_readable(clips, tmp_path):
    protos = build_prototypes(*clips, C, key())
    path = enrollment.save_prototypes(tmp_path / "prototypes.json", protos, labels=list("ABCDE"))
    record = json.loads(path.read_text())
    assert record["model"] == key().as_dict() and record["labels"] == list("ABCDE")
    assert record["counts"] == [3, 2, 0, 1, 0] and len(record["prototypes"]) == C
    loaded = enrollment.load_prototypes(path, key(), descriptor_blocks(D))
    assert np.array_equal(loaded.prototypes, protos.prototypes) and np.array_equal(loaded.counts, protos.counts)
    assert loaded.model == key()
    with pytest.raises(ValueError, match="bound to no model"):
        enrollment.save_prototypes(tmp_path / "x.json", build_prototypes(*clips, C))


def test_a_hand_never_seen_while_enrolling_round_trips(tmp_path):
    """A centered block that is the same in every enrollment clip (a hand never detected: zeros) is all zeros
    in the prototypes; the file keeps it and reads back."""
    blocks = descriptor_blocks(D, (2,))                                         # embedding + one 4-number hand
    rng = np.random.default_rng(2)
    descriptors = np.concatenate([rng.normal(size=(3, D)), np.zeros((3, 4))], axis=1)
    protos = build_prototypes(descriptors, np.array([0, 1, 3]), C, key(), blocks)
    assert not protos.prototypes[:, D:].any()
    path = enrollment.save_prototypes(tmp_path / "p.json", protos)
    assert np.array_equal(enrollment.load_prototypes(path, key(), blocks).prototypes, protos.prototypes)


@pytest.mark.parametrize("other, said", [
    (key(sha256="cd" * 32), "sha256"), (key(layout=90, num_keypoints=90), "layout 65 (this model: 90)"),
    (key(num_labels=C + 1), "num_labels 5 (this model: 6)")])
def test_prototypes_of_another_model_are_one_line(clips, tmp_path, other, said):
    path = enrollment.save_prototypes(tmp_path / "p.json", build_prototypes(*clips, C, key()))
    with pytest.raises(UserError) as error:
        enrollment.load_prototypes(path, other, descriptor_blocks(D))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: prototypes of another model: ")
    assert said in message and message.endswith("enroll again with this model")


@pytest.mark.parametrize("edit, said", [
    (lambda r: r.update(prototypes=r["prototypes"][:-1]), "needs counts (5 clip counts >= 0), center (8 finite numbers) and prototypes"),
    (lambda r: r.update(counts=[1, 2]), "needs counts"),
    (lambda r: r["prototypes"][0].append(0.5), "5 rows of 8 finite numbers"),
    (lambda r: r["prototypes"].__setitem__(1, ["x"] * D), "finite numbers"),
    (lambda r: r["prototypes"].__setitem__(0, [1.0] * D), "must have norm 1"),
    (lambda r: r["prototypes"].__setitem__(2, [0.5] * D), "be all zeros"),
    (lambda r: r.update(format="other"), "not a prototype file"),
    (lambda r: r.update(format_version=99), "prototype file version 99"),
    (lambda r: r.pop("model"), "records no model block")])
def test_a_file_of_the_wrong_shape_is_one_line(clips, tmp_path, edit, said):
    path = enrollment.save_prototypes(tmp_path / "p.json", build_prototypes(*clips, C, key()))
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(UserError) as error:
        enrollment.load_prototypes(path, key(), descriptor_blocks(D))
    message = str(error.value)
    assert said in message and "\n" not in message and message.startswith(f"{path}: ")


def test_a_file_that_is_not_json_or_missing_is_one_line(tmp_path):
    (tmp_path / "p.json").write_text("{cut off")
    with pytest.raises(UserError, match="p.json: prototype file is not valid JSON"):
        enrollment.load_prototypes(tmp_path / "p.json", key(), descriptor_blocks(D))
    with pytest.raises(UserError, match="nope.json: prototype file not found"):
        enrollment.load_prototypes(tmp_path / "nope.json", key(), descriptor_blocks(D))


def test_params_come_from_the_card():
    assert Params() == Params(30.0, 1.0, 0.5)      # chosen on validation signers (docs/personalization.md)
    card = {"personalization": {"tau": 12, "alpha": 0.5, "hand_weight": 0.25}}
    assert enrollment.params_from_card(card) == Params(12.0, 0.5, 0.25)
    assert enrollment.params_from_card({}) == Params()


# ----------------------------------------------------------------------------------------------- exports
@pytest.fixture(scope="module")
def exports(ptq_exports) -> dict:
    """{mode: .tflite path}: every PTQ mode of the trained demo fold (the shared exports, conftest; read only)."""
    from ptq_export import PTQ_FILES
    return {mode: ptq_exports / name for mode, name in PTQ_FILES.items()}


@pytest.fixture(scope="module")
def held_out(trained_fold):
    from dataset import load_split
    keypoints, masks, _ = load_split(trained_fold.data_path, "test", trained_fold.cfg, max_samples=6).padded(
        trained_fold.cfg)
    return keypoints, masks


MODES = ("fp32", "dynamic", "float16", "int8", "int8_io", "int16x8")


@pytest.mark.parametrize("mode", MODES)
def test_logits_at_index_0_and_the_embedding_at_index_1(exports, trained_fold, held_out, mode):
    """As tflite_flutter reads them: inputs and outputs by index (run / runForMultipleInputs), and by name
    (the signature runner); both give what tflite_runtime returns."""
    from ai_edge_litert.interpreter import Interpreter
    from tflite_runtime import TFLiteModel, dequantize, quantize
    keypoints, masks = held_out[0][:1], held_out[1][:1]
    logits, embedding, _ = TFLiteModel(exports[mode]).run_with_embedding(keypoints, masks)
    assert np.array_equal(TFLiteModel(exports[mode])(keypoints, masks), logits)    # the old reader: unchanged

    by_index = Interpreter(model_path=str(exports[mode]))
    by_index.allocate_tensors()
    inputs, outputs = by_index.get_input_details(), by_index.get_output_details()
    d, c = trained_fold.cfg["d_model"], trained_fold.cfg["num_labels"]
    assert [(o["name"], o["shape"].tolist()) for o in outputs] == [("logits", [1, c]), ("embedding", [1, d])]
    by_index.set_tensor(inputs[0]["index"], quantize(keypoints, inputs[0]))
    by_index.set_tensor(inputs[1]["index"], quantize(masks, inputs[1]))
    by_index.invoke()
    assert np.array_equal(dequantize(by_index.get_tensor(outputs[0]["index"]), outputs[0]), logits)
    assert np.array_equal(dequantize(by_index.get_tensor(outputs[1]["index"]), outputs[1]), embedding)

    runner = Interpreter(model_path=str(exports[mode])).get_signature_runner()
    assert set(runner.get_output_details()) == {"logits", "embedding"}   # by name (listed sorted)
    named = runner(keypoints=quantize(keypoints, inputs[0]), attention_mask=quantize(masks, inputs[1]))
    assert np.array_equal(dequantize(named["logits"], outputs[0]), logits)
    assert np.array_equal(dequantize(named["embedding"], outputs[1]), embedding)
    dtype = "int8" if mode == "int8_io" else "float32"
    assert [o["dtype"] for o in json.loads(exports[mode].with_suffix(".json").read_text())["outputs"]] == [dtype] * 2


@pytest.mark.parametrize("mode", MODES)
def test_logits_are_those_of_a_logits_only_export(exports, trained_fold, held_out, mode):
    """The second output changes nothing in the logits: bit-identical to converting the plain model."""
    from model_functional import load_model
    from quantization import QuantizationData
    from tf_env import tf
    from tflite_export import CONVERTER_MODES, INPUT_NAMES, SEQUENCE_LENGTH, variables_holder
    from tflite_runtime import TFLiteModel
    cfg = trained_fold.cfg
    model = load_model(trained_fold.h5, cfg)

    @tf.function(input_signature=[tf.TensorSpec([1, SEQUENCE_LENGTH, 65, 2], tf.float32, name=INPUT_NAMES[0]),
                                  tf.TensorSpec([1, SEQUENCE_LENGTH], tf.float32, name=INPUT_NAMES[1])])
    def serve(keypoints, attention_mask):
        return {"logits": model({"keypoints": keypoints, "attention_mask": attention_mask}, training=False)}
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()],
                                                               variables_holder(model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    CONVERTER_MODES[mode](converter, QuantizationData.load(trained_fold.data_path, cfg, 32, 42).representative)
    logits_only = TFLiteModel(converter.convert())
    assert not logits_only.has_embedding                  # an export from before the embedding output
    with pytest.raises(UserError, match="has no 'embedding' output"):
        logits_only.run_with_embedding(*held_out)
    assert np.array_equal(logits_only.predict(*held_out)[0], TFLiteModel(exports[mode]).predict(*held_out)[0])


@pytest.mark.parametrize("mode", MODES)
def test_embedding_matches_keras_within_the_mode_bound(exports, trained_fold, held_out, mode):
    from model_functional import embedding_model, load_model
    from tflite_runtime import EMBEDDING_MIN_COSINE, EMBEDDING_PARITY_TOLERANCE, TFLiteModel
    card = json.loads(exports[mode].with_suffix(".json").read_text())
    parity = card["parity"]
    assert parity["embedding_passed"] and parity["passed"] and parity["clips"] == 30
    assert parity["min_embedding_cosine"] >= EMBEDDING_MIN_COSINE[mode] == parity["embedding_min_cosine"]
    if mode in EMBEDDING_PARITY_TOLERANCE:
        assert parity["max_abs_embedding_diff"] <= EMBEDDING_PARITY_TOLERANCE[mode]
    keras_model = embedding_model(load_model(trained_fold.h5, trained_fold.cfg))
    keypoints, masks = held_out
    expected = keras_model({"keypoints": keypoints, "attention_mask": masks}, training=False)[1].numpy()
    expected_layer = keras_model.get_layer("last_valid_token").output.shape[-1]
    _, got, _ = TFLiteModel(exports[mode]).predict_with_embedding(keypoints, masks)
    assert got.shape == expected.shape == (6, expected_layer)
    assert (np.sum(normalize(got) * normalize(expected), axis=1) >= EMBEDDING_MIN_COSINE[mode]).all()


@pytest.mark.parametrize("mode", MODES)
def test_card_records_the_personalization(exports, trained_fold, mode):
    card = json.loads(exports[mode].with_suffix(".json").read_text())
    block = card["personalization"]
    assert card["card_version"] == 6
    assert {k: block[k] for k in ("embedding_output", "output_index", "embedding_size", "tau", "alpha",
                                  "normalization", "prototype_rule")} == {
        "embedding_output": "embedding", "output_index": 1, "embedding_size": trained_fold.cfg["d_model"],
        "tau": Params().tau, "alpha": Params().alpha, "normalization": "l2",
        "prototype_rule": enrollment.PROTOTYPE_RULE}
    assert block["hand_weight"] == Params().hand_weight
    assert [(h["hand"], h["positions"]) for h in block["hand_shape_blocks"]] == [
        ("left", list(range(23, 44))), ("right", list(range(44, 65)))]
    assert [b.size for b in enrollment.card_blocks(card)] == [trained_fold.cfg["d_model"], 42, 42]
    assert block["model_sha256"] == enrollment.model_sha256(exports[mode])
    assert block["embedding_dtype"] == ("int8" if mode == "int8_io" else "float32")
    assert ModelKey.from_card(exports[mode], card) == ModelKey(
        block["model_sha256"], 65, 65, trained_fold.cfg["num_labels"], trained_fold.cfg["d_model"])


def test_prototypes_of_another_export_are_refused(exports, trained_fold, held_out, tmp_path):
    from tflite_runtime import TFLiteModel, read_model_card
    fp32, int8 = (ModelKey.from_card(exports[m], read_model_card(exports[m])) for m in ("fp32", "int8"))
    _, embeddings, _ = TFLiteModel(exports["fp32"]).predict_with_embedding(*held_out)
    protos = build_prototypes(embeddings, np.array([0, 0, 1, 1, 2, 2]), fp32.num_labels, fp32)
    path = enrollment.save_prototypes(tmp_path / "prototypes.json", protos)
    blocks = descriptor_blocks(fp32.embedding_size)
    assert np.array_equal(enrollment.load_prototypes(path, fp32, blocks).prototypes, protos.prototypes)
    with pytest.raises(UserError, match=f"prototypes of another model: sha256 '{fp32.sha256}'"):
        enrollment.load_prototypes(path, int8, blocks)
    with pytest.raises(UserError, match="descriptor blocks"):
        enrollment.load_prototypes(path, fp32, descriptor_blocks(fp32.embedding_size, (21, 21)))
    card = read_model_card(exports["fp32"])
    with pytest.raises(UserError, match="belongs to another file"):
        ModelKey.from_card(exports["int8"], card)
    with pytest.raises(UserError, match="has no personalization block"):
        ModelKey.from_card(exports["fp32"], {k: v for k, v in card.items() if k != "personalization"})


# ----------------------------------------------------------------------------------------------- test vectors
def port_unit(x: np.ndarray, sizes: list[int], center: np.ndarray) -> np.ndarray:
    """docs/personalization.md: each block minus its center, normalized on its own (float32)."""
    out, start = np.zeros_like(x, np.float32), 0
    for size in sizes:
        block = x[start:start + size] - center[start:start + size]
        out[start:start + size] = block / max(np.sqrt(np.sum(block * block)), np.float32(1e-12))
        start += size
    return out


def port_prototypes(descriptors: np.ndarray, ids: np.ndarray, num_labels: int, blocks: list[dict]):
    """docs/personalization.md steps 2-3 written independently in float32 (as a phone would)."""
    sizes = [b["size"] for b in blocks]
    center, start = np.zeros(descriptors.shape[1], np.float32), 0
    for b in blocks:
        if b["centered"]:
            center[start:start + b["size"]] = descriptors[:, start:start + b["size"]].mean(axis=0)
        start += b["size"]
    out = np.zeros((num_labels, descriptors.shape[1]), np.float32)
    for c in range(num_labels):
        rows = [port_unit(x, sizes, center) for x, i in zip(descriptors, ids) if i == c]
        if rows:
            out[c] = port_unit(np.sum(rows, axis=0) / np.float32(len(rows)), sizes, np.zeros_like(center))
    return out, center


def port_score(descriptor, logits, prototypes, center, counts, blocks, tau, alpha) -> np.ndarray:
    """docs/personalization.md step 4 in float32."""
    s = np.exp(logits - logits.max())
    s = s / s.sum()
    enrolled = [c for c in range(len(counts)) if counts[c] > 0]
    if not enrolled:
        return s
    sizes, weights = [b["size"] for b in blocks], np.array([b["weight"] for b in blocks], np.float32)
    unit = port_unit(descriptor, sizes, center)
    bounds = np.cumsum([0] + sizes)
    sims = [sum(w * np.sum(unit[a:b] * prototypes[c][a:b]) for w, a, b in zip(weights, bounds, bounds[1:]))
            / weights.sum() for c in enrolled]
    z = np.float32(tau) * np.array(sims, np.float32)
    q = np.exp(z - z.max())
    q = q / q.sum()
    mass = sum(s[c] for c in enrolled)
    p = s.copy()
    for k, c in enumerate(enrolled):
        p[c] = np.float32(alpha) * mass * q[k] + np.float32(1 - alpha) * s[c]
    return p


def port_hand_shape(keypoints: np.ndarray, mask: np.ndarray, positions: list[int]) -> np.ndarray:
    """docs/personalization.md step 1 in float32: a hand's mean shape over the frames it is seen in."""
    total, seen = np.zeros((len(positions), 2), np.float32), 0
    for t in range(len(mask)):
        points = keypoints[t, positions]
        if mask[t] > 0 and np.any(points != 0):
            total, seen = total + points, seen + 1
    return (total / np.float32(max(seen, 1))).reshape(-1)


@pytest.fixture(scope="module")
def vector(exports, trained_fold, tmp_path_factory):
    """The fp32 export's test vector with its enrollment case (clips of the held-out signer, from the card)."""
    import make_test_vectors
    from dataset import list_split
    out = tmp_path_factory.mktemp("enroll_vectors")
    sample = list_split(trained_fold.data_path, "test")[0]
    path, = make_test_vectors.write_vectors([str(exports["fp32"])], str(sample), str(out))
    return json.loads(path.read_text())


def test_vector_enrollment_case_holds_the_model_outputs(vector, exports, trained_fold):
    from dataset import load_sample
    from preprocessing import model_inputs
    from tflite_runtime import TFLiteModel
    case = vector["enrollment"]
    assert vector["format_version"] == 4 and case["params"] == {"tau": 30.0, "alpha": 1.0, "hand_weight": 0.5}
    assert [(c["label"], c["class_id"]) for c in case["enroll_clips"]] == [
        ("G01", 0), ("G01", 0), ("G02", 1), ("G02", 1), ("G03", 2)]
    assert [(c["label"], c["class_id"]) for c in case["test_clips"]] == [("G01", 0), ("G02", 1), ("G03", 2),
                                                                         ("G04", 3)]
    model = TFLiteModel(exports["fp32"])
    for clip in case["enroll_clips"] + case["test_clips"]:
        raw = load_sample(trained_fold.data_path / "test" / clip["label"] / clip["file"])["keypoints"]
        keypoints, mask = model_inputs(raw, trained_fold.cfg)
        logits, embedding, _ = model.run_with_embedding(keypoints, mask)
        assert np.array_equal(np.array(clip["embedding"], np.float32), embedding[0])
        hands = [port_hand_shape(keypoints[0], mask[0], list(range(a, a + 21))) for a in (23, 44)]
        np.testing.assert_allclose(clip["descriptor"], np.concatenate([embedding[0]] + hands), atol=1e-6)
        assert "logits" not in clip or np.array_equal(np.array(clip["logits"], np.float32), logits[0])
    main = vector["expected_output"]
    assert len(main["embedding"][0]) == trained_fold.cfg["d_model"]


def test_vector_enrollment_case_is_what_enrollment_computes(vector):
    case = vector["enrollment"]
    blocks = tuple(enrollment.Block(**b) for b in case["blocks"])
    descriptors = np.array([c["descriptor"] for c in case["enroll_clips"]])
    ids = np.array([c["class_id"] for c in case["enroll_clips"]])
    protos = build_prototypes(descriptors, ids, len(case["prototypes"]["counts"]), blocks=blocks)
    assert np.array_equal(protos.prototypes, np.array(case["prototypes"]["prototypes"], np.float32))
    assert protos.counts.tolist() == case["prototypes"]["counts"] and case["prototypes"]["enrolled"] == [0, 1, 2]
    params = Params(**case["params"])
    for clip in case["test_clips"]:
        p = score(np.array(clip["descriptor"]), np.array(clip["logits"], np.float32), protos, params)
        assert np.array_equal(p, np.array(clip["probabilities"])) and int(np.argmax(p)) == clip["top1"]
        assert sum(clip["probabilities"]) == pytest.approx(1, abs=1e-12)
    fallback = case["test_clips"][3]                                      # G04 is not enrolled: p = s there
    assert fallback["probabilities"][3:] == pytest.approx(fallback["classifier_probabilities"][3:], abs=1e-15)


def test_a_float32_port_of_the_spec_meets_the_enrollment_tolerances(vector):
    """What an app developer does: port docs/personalization.md, feed it the vector's descriptors and logits."""
    case = vector["enrollment"]
    tolerance = case["tolerance"]
    descriptors = np.array([c["descriptor"] for c in case["enroll_clips"]], np.float32)
    ids = [c["class_id"] for c in case["enroll_clips"]]
    counts = case["prototypes"]["counts"]
    ported, center = port_prototypes(descriptors, ids, len(counts), case["blocks"])
    assert np.abs(ported - np.array(case["prototypes"]["prototypes"])).max() <= tolerance["prototypes_abs"]
    for clip in case["test_clips"]:
        p = port_score(np.array(clip["descriptor"], np.float32), np.array(clip["logits"], np.float32), ported,
                       center, counts, case["blocks"], case["params"]["tau"], case["params"]["alpha"])
        assert np.abs(p - np.array(clip["probabilities"])).max() <= tolerance["probabilities_abs"]
        assert int(np.argmax(p)) == clip["top1"]
