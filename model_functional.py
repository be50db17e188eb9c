"""SignBART as a tf_keras Functional model: `build_model(cfg)`, `load_model(path, cfg)` (weights only),
`load_pretrained(path, cfg)` (a start for training, possibly from another label set),
`embedding_model(model)` (the export's two outputs), `parameter_breakdown`, `count_flops(cfg)`.

Inputs:  keypoints (B, T, K, 2) float32 (group-normalized, zero-padded) and attention_mask (B, T) float32, the
         LENGTH mask of preprocessing.length_mask (a prefix of ones). T is dynamic unless `max_frames` is given.
Output:  logits (B, num_labels). A clip's embedding (enrollment.py) is the output of
         [last_valid_token] (B, d): the pooled decoder state before the classifier dropout
         (embedding_model).

Graph (top-level layer names in brackets):
  keypoints -> x plane [x_coords] -> Dense [proj_x1] -> encoder (encoder.py) -------------------------+
  keypoints -> y plane [y_coords] -> Dense [proj_y1] -> causal decoder with cross-attention (decoder.py) -> last valid
  frame [last_valid_token] -> Dropout [classifier_dropout] -> Dense [classifier] -> logits
  attention_mask -> [encoder_padding_bias] (encoder self-attention and decoder cross-attention)
                 -> [decoder_causal_bias]  (decoder self-attention)

The model is padding invariant: a clip gives the same logits (to float rounding) at its own length and zero-padded
to 64 frames with the length mask, which is how evaluation and the TFLite export feed it.

    python model_functional.py --config_path configs/arabic-asl-65kpts.yaml     # summary + parameter counts
"""
from __future__ import annotations

import argparse

from attention import AttentionBias
from config import load_config, num_keypoints
from preprocessing import MAX_FRAMES
from decoder import decode
from encoder import encode
from layers import CoordinatePlane, LastValidToken
from util import UserError, cli
from tf_env import keras

MODEL_NAME = "signbart_functional"
EMBEDDING_LAYER = "last_valid_token"  # its output (B, d_model) = the embedding (export output 1)
PARAMETER_GROUPS = {  # report section -> top-level layer name prefixes
    "projection": ("proj_x1", "proj_y1"),
    "encoder": ("encoder_",),
    "decoder": ("decoder_",),
    "classification_head": ("classifier",),
}


def build_model(cfg: dict, max_frames: int | None = None, batch_size: int | None = None) -> keras.Model:
    """The SignBART Functional model for a validated config (config.load_config)."""
    k, d = num_keypoints(cfg), cfg["d_model"]
    keypoints = keras.Input((max_frames, k, 2), batch_size=batch_size, name="keypoints")
    mask = keras.Input((max_frames,), batch_size=batch_size, name="attention_mask")

    x_embed = keras.layers.Dense(d, name="proj_x1")(CoordinatePlane(0, name="x_coords")(keypoints))   # (B, T, d)
    y_embed = keras.layers.Dense(d, name="proj_y1")(CoordinatePlane(1, name="y_coords")(keypoints))   # (B, T, d)
    padding_bias = AttentionBias(cfg["attention_mask_value"], name="encoder_padding_bias")(mask)     # (B,1,1,T)
    causal_bias = AttentionBias(cfg["attention_mask_value"], causal=True, name="decoder_causal_bias")(mask)  # (B,1,T,T)

    encoder_out = encode(x_embed, padding_bias, cfg)                                      # (B, T, d)
    decoder_out = decode(y_embed, encoder_out, causal_bias, padding_bias, cfg)            # (B, T, d)
    last = LastValidToken(name=EMBEDDING_LAYER)([decoder_out, mask])                      # (B, d)
    last = keras.layers.Dropout(cfg["classifier_dropout"], name="classifier_dropout")(last)
    logits = keras.layers.Dense(cfg["num_labels"], name="classifier")(last)              # (B, C)
    return keras.Model({"keypoints": keypoints, "attention_mask": mask}, logits, name=MODEL_NAME)


def embedding_model(model: keras.Model) -> keras.Model:
    """The same layers and weights (a trained FP32 or QAT SignBART) with two outputs: [logits
    (B, C), embedding (B, d) = the output of EMBEDDING_LAYER]. The logits are computed as before."""
    layer = model.get_layer(EMBEDDING_LAYER)
    # tfmot's QAT model shares the layer with the graph it was cloned from: take the call in this model
    node = next(i for i in range(len(layer._inbound_nodes))
                if f"{layer.name}_ib-{i}" in model._network_nodes)
    return keras.Model(model.input, [model.output, layer.get_output_at(node)],
                       name=f"{model.name}_with_embedding")


def load_model(path, cfg: dict) -> keras.Model:
    """Weights-only loading: build the model from the config, then read the weights of a .h5 (a full-model
    save such as final_model.h5, or a weights file) by topology. Nothing stored in the file is deserialized as
    code (a Lambda layer or a custom object in a hostile .h5 is never built). A file that does not fit the
    config's model raises UserError naming both."""
    model = build_model(cfg)
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError, TypeError, AttributeError, IndexError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(f"{path}: cannot load its weights into the model of {cfg['config_path']} "
                        f"({reason})") from None
    return model


def saved_num_labels(path) -> int | None:
    """The number of labels of the classifier stored in a .h5 (full-model or weights-only save), or None when
    it has none. Reads array shapes with h5py: nothing in the file is run."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "classifier" not in root:
                return None
            kernels = []
            root["classifier"].visititems(lambda name, item: kernels.append(item.shape)
                                          if isinstance(item, h5py.Dataset) and len(item.shape) == 2 else None)
            return int(kernels[0][1]) if kernels else None
    except OSError as e:
        raise UserError(f"{path}: not a readable .h5 file ({str(e).splitlines()[0][:200]})") from None


def load_pretrained(path, cfg: dict) -> tuple[keras.Model, str]:
    """The model that training starts from (--pretrained_path). A .h5 of the same network gives every weight.
    One trained on another label set (pre-training on another dataset's signs, same keypoints and network)
    gives every weight but the classification head, which starts freshly initialized. Returns the model and,
    for the log, what was taken from the file."""
    labels = saved_num_labels(path)
    if labels is None or labels == cfg["num_labels"]:
        return load_model(path, cfg), "every weight"
    source = load_model(path, dict(cfg, num_labels=labels))
    model = build_model(cfg)
    for layer, trained in zip(model.layers, source.layers):                  # the same graph, layer by layer
        if layer.name != "classifier":
            layer.set_weights(trained.get_weights())
    return model, (f"every weight but the classification head ({labels} labels in the file, "
                   f"{cfg['num_labels']} here: a new head)")


def parameter_breakdown(model: keras.Model) -> dict:
    """{'projection': n, 'encoder': n, 'decoder': n, 'classification_head': n, 'total': n}."""
    counts = {group: 0 for group in PARAMETER_GROUPS}
    for layer in model.layers:
        for group, prefixes in PARAMETER_GROUPS.items():
            if layer.name.startswith(prefixes):
                counts[group] += layer.count_params()
    return counts | {"total": model.count_params()}


def count_flops(cfg: dict, model: keras.Model | None = None) -> int:
    """FLOPs of one clip through a model of `cfg` (method: metrics.FLOPS_METHOD): `model` built with
    static shapes, build_model(cfg, max_frames=MAX_FRAMES, batch_size=1), or a fresh one."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tf_env import quiet_native, tf
    model = model or build_model(cfg, max_frames=MAX_FRAMES, batch_size=1)
    spec = [tf.TensorSpec([1, MAX_FRAMES, num_keypoints(cfg), 2], tf.float32),
            tf.TensorSpec([1, MAX_FRAMES], tf.float32)]
    forward = tf.function(lambda kp, mask: model({"keypoints": kp, "attention_mask": mask},
                                                 training=False))
    with quiet_native():  # grappler's absl lines
        graph = convert_variables_to_constants_v2(forward.get_concrete_function(*spec)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(),
                                            cmd="op", options=options)
    return int(profile.total_float_ops)


@cli
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config_path", required=True, help="YAML config (configs/)")
    args = ap.parse_args()
    model = build_model(load_config(args.config_path))
    model.summary(line_length=110)
    for group, count in parameter_breakdown(model).items():
        print(f"{group:>20}: {count:,}")


if __name__ == "__main__":
    main()
