"""Config loading and validation: one function, `load_config(path)`, used by every script.

A config names the stored keypoint `layout` of the pickles it reads (keypoints.py), the `joint_idx` it selects
from them, the normalization `groups` (named lists of stored indices that must cover joint_idx exactly) and the
SignBART hyperparameters of the reference. Index lists may use ranges: `[0-22, 25]`.
An optional `training:` block sets the FP32 training hyperparameters (TRAINING below; the defaults
of the keys it leaves out live in recipes.py and augmentations.AugmentOptions), and
`--set training.KEY=VALUE` overrides (load_config(path, overrides)) change it from the command line
with the same checks.
Any problem raises ConfigError naming the file and the key.

Limits are checked before anything is expanded (MAX_CONFIG_BYTES, MAX_YAML_VALUES after aliases,
range bounds) and every number must be finite. check_config(raw, path) validates a mapping that
did not come from a file (the config in a model card, tflite_runtime).

    python config.py configs/*.yaml      # validate configs and print their selection
    python config.py --recipe configs/arabic-asl-65kpts-signer-independent.yaml   # [--demo]
        # the pipeline's settings (recipes.py) with the config's training: block, NAME=value lines
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter
from collections.abc import Hashable

import yaml

from augmentations import DEFAULTS, check_option
from keypoints import READABLE_FROM, get_layout, hand_positions, rest_hand_points
from preprocessing import MAX_FRAMES
from recipes import (DOMINANT_HAND_RATIO, FP32_BATCH_SIZE, FP32_WARMUP_EPOCHS, REST_HAND_CUTOFF,
                     WEIGHT_DECAY, pipeline_defaults, print_settings)
from util import Expansion, HelpFormatter, UserError, brief, cli, expanded_size

REQUIRED = {
    "layout": int, "joint_idx": list, "groups": dict, "num_labels": int,
    "d_model": int, "encoder_layers": int, "decoder_layers": int,
    "encoder_attention_heads": int, "decoder_attention_heads": int,
    "encoder_ffn_dim": int, "decoder_ffn_dim": int, "max_position_embeddings": int,
    "dropout": float, "activation_dropout": float, "attention_dropout": float, "classifier_dropout": float,
}
OPTIONAL = {
    "batch_size": (int, FP32_BATCH_SIZE),    # FP32 training batch size (reference: 1)
    "weight_decay": (float, WEIGHT_DECAY),   # AdamW weight decay (reference: 0.01)
    "attention_mask_value": (float, -100.0),  # additive mask for padded/future keys; finite so int8 keeps scores
    "encoder_layerdrop": (float, 0.0),       # reference keys, accepted but unused (as in the reference)
    "decoder_layerdrop": (float, 0.0),
    "pe": (str, "learn"),
    "description": (str, ""),
    "training": (dict, {}),                  # FP32 training hyperparameters (TRAINING)
    # app contract: hands this far below the shoulders -> undetected (shoulder widths; 0 = off;
    # preprocessing.drop_resting_hands)
    "rest_hand_cutoff": (float, REST_HAND_CUTOFF),
    # app contract: mirror a clip whose left hand is seen in more than this many times the right
    # hand's frames (0 = off; > 1)
    "dominant_hand_ratio": (float, DOMINANT_HAND_RATIO),
}
SCHEDULES = ("plateau", "cosine")
MAX_CONFIG_BYTES = 64 * 1024   # a config is ~1 KB; a larger file is refused before it is parsed
MAX_YAML_VALUES = 10_000       # scalars, lists and mappings of a config, an alias as what it repeats
RANGE = re.compile(r"\s*(\d{1,9})\s*-\s*(\d{1,9})\s*", re.ASCII)  # "a-b" of an index list
TRAINING = {  # key: (type, check, what the check wants); a key left out: the recipes.py default
    "epochs": (int, lambda v: v >= 1, ">= 1"),
    "batch_size": (int, lambda v: v >= 1, ">= 1"),  # replaces the top-level batch_size
    "lr": (float, lambda v: v > 0, "> 0"),
    "weight_decay": (float, lambda v: v >= 0, ">= 0"),  # replaces the top-level weight_decay
    "schedule": (str, lambda v: v in SCHEDULES, f"one of {list(SCHEDULES)}"),
    "warmup_epochs": (int, lambda v: v >= 0, ">= 0"),
    "min_lr": (float, lambda v: v >= 0, ">= 0"),
    "label_smoothing": (float, lambda v: 0 <= v < 1, "in [0, 1)"),
    "bucket_batches": (int, lambda v: v >= 0, ">= 0"),  # length bucketing window (dataset.make_dataset)
    "augmentation": (dict, lambda v: True, ""),   # augmentations.AugmentOptions
}


class ConfigError(UserError, ValueError):
    pass


def parse_index_list(items, where: str, size: int | None = None) -> list[int]:
    """Expand `[0-2, 5]` (ints or "a-b" range strings) to `[0, 1, 2, 5]`. With `size` (the layout's
    number of points), an index or range outside 0..size-1 is refused BEFORE it is expanded
    ("0-999999999" costs nothing)."""
    out = []
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(f"{where}: {brief(item)} is not an index")
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str) and "-" in item:
            bounds = RANGE.fullmatch(item)
            if not bounds or int(bounds[1]) > int(bounds[2]):
                raise ConfigError(f"{where}: bad range {brief(item)}")
            lo, hi = int(bounds[1]), int(bounds[2])
        else:
            raise ConfigError(f"{where}: {brief(item)} is not an index or 'a-b' range")
        if size is not None and not 0 <= lo <= hi < size:
            first = lo if lo < 0 else max(lo, size)
            shown = first if first == hi else f"{first}-{hi}"
            raise ConfigError(f"{where}: indices [{shown}] out of range for a layout of {size} "
                              f"points (0-{size - 1})")
        out.extend(range(lo, hi + 1))
    return out


def _typed(value, kind: type, key: str, path: str):
    """value as `kind` (an int or a numeric string such as YAML's `1e-3` is a float), else
    ConfigError."""
    if kind is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            raise ConfigError(f"{path}: key '{key}' must be a finite number, got {brief(value)}") \
                from None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{path}: key '{key}' must be {kind.__name__}, got {brief(value)}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{path}: key '{key}' must be a finite number, got {value}")
    return value


def _unknown(block: dict, known, prefix: str, path: str) -> None:
    unknown = set(block) - set(known)
    if unknown:
        shown = sorted(prefix + str(k)[:40] for k in unknown)[:10]
        raise ConfigError(f"{path}: unknown key(s) {shown}")


def _check_types(raw: dict, path: str) -> dict:
    _unknown(raw, set(REQUIRED) | set(OPTIONAL), "", path)
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {missing}")
    cfg = {}
    for key, value in raw.items():
        cfg[key] = _typed(value, REQUIRED[key] if key in REQUIRED else OPTIONAL[key][0], key, path)
    for key, (_, default) in OPTIONAL.items():
        cfg.setdefault(key, default)
    return cfg


def _check_augmentation(block: dict, path: str) -> dict:
    _unknown(block, DEFAULTS, "training.augmentation.", path)
    checked = {}
    for key, value in block.items():
        try:
            checked[key] = check_option(key, value)
        except ValueError as e:
            raise ConfigError(f"{path}: key 'training.augmentation.{key}' {e}") from None
    return checked


def _check_training(raw: dict, cfg: dict, path: str) -> None:
    """Check the `training:` block; its batch_size/weight_decay replace the top-level keys."""
    block = cfg["training"]
    _unknown(block, TRAINING, "training.", path)
    checked = {}
    for key, value in block.items():
        kind, ok, wants = TRAINING[key]
        value = _typed(value, kind, f"training.{key}", path)
        if not ok(value):
            raise ConfigError(f"{path}: key 'training.{key}' must be {wants}, got {brief(value)}")
        checked[key] = value
    if checked.get("warmup_epochs", FP32_WARMUP_EPOCHS) >= checked.get("epochs", float("inf")):
        raise ConfigError(f"{path}: key 'training.warmup_epochs' must be < training.epochs")
    if "augmentation" in checked:
        checked["augmentation"] = _check_augmentation(checked["augmentation"], path)
    for key in ("batch_size", "weight_decay"):
        if key in checked and key in raw:
            raise ConfigError(f"{path}: key 'training.{key}' is also given at the top level; "
                              "give it once")
        cfg[key] = checked.get(key, cfg[key])
    cfg["training"] = checked


def parse_override(item: str) -> tuple[list[str], object]:
    """`training.augmentation.flip=mirror_only` -> (['training', 'augmentation', 'flip'],
    'mirror_only'); the value is read as YAML (numbers, true/false, [0.8, 1.2])."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {brief(item)}: expected KEY=VALUE, e.g. training.lr=1e-3")
    keys = key.strip().split(".")
    if keys[0] != "training" or len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set {brief(item)}: only training.* keys can be set (model keys are "
                          "read from the config file by PTQ, QAT and evaluation)")
    return keys, parse_yaml(text, f"--set {brief(item)}", "not a YAML value")


def apply_overrides(raw: dict, overrides) -> dict:
    """The config mapping with each `--set KEY=VALUE` applied in order (a later one wins)."""
    for item in overrides:
        keys, value = parse_override(item)
        block = raw
        for depth, key in enumerate(keys[:-1]):
            block = block.setdefault(key, {})
            if not isinstance(block, dict):
                where = ".".join(keys[:depth + 1])
                raise ConfigError(f"--set {brief(item)}: '{where}' is not a mapping")
        block[keys[-1]] = value
    return raw


def _check_values(cfg: dict, path: str) -> None:
    for key in ("dropout", "activation_dropout", "attention_dropout", "classifier_dropout"):
        if not 0.0 <= cfg[key] < 1.0:
            raise ConfigError(f"{path}: key '{key}' must be in [0, 1), got {cfg[key]}")
    for key in ("num_labels", "d_model", "encoder_ffn_dim", "decoder_ffn_dim", "batch_size",
                "encoder_attention_heads", "decoder_attention_heads"):
        if cfg[key] < 1:
            raise ConfigError(f"{path}: key '{key}' must be >= 1, got {cfg[key]}")
    for key in ("encoder_attention_heads", "decoder_attention_heads"):
        if cfg["d_model"] % cfg[key]:
            raise ConfigError(f"{path}: key '{key}' ({cfg[key]}) must divide d_model ({cfg['d_model']})")
    if cfg["max_position_embeddings"] < MAX_FRAMES:
        raise ConfigError(f"{path}: key 'max_position_embeddings' must be >= {MAX_FRAMES}")
    if cfg["attention_mask_value"] >= 0:
        raise ConfigError(f"{path}: key 'attention_mask_value' must be negative")
    if cfg["rest_hand_cutoff"] < 0:
        raise ConfigError(f"{path}: key 'rest_hand_cutoff' must be >= 0 (0 = off), got {cfg['rest_hand_cutoff']}")
    if cfg["dominant_hand_ratio"] != 0 and not cfg["dominant_hand_ratio"] > 1:
        raise ConfigError(f"{path}: key 'dominant_hand_ratio' must be 0 (off) or > 1, "
                          f"got {cfg['dominant_hand_ratio']}")


def _check_indices(cfg: dict, path: str) -> None:
    try:
        size = get_layout(cfg["layout"]).size
    except ValueError as e:
        raise ConfigError(f"{path}: key 'layout': {e}") from None
    joints = parse_index_list(cfg["joint_idx"], f"{path}: key 'joint_idx'", size)
    repeated = sorted(i for i, n in Counter(joints).items() if n > 1)
    if repeated:
        raise ConfigError(f"{path}: key 'joint_idx': repeated indices {repeated[:10]}")
    groups, seen, selected = {}, {}, set(joints)
    for name, items in cfg["groups"].items():
        where = f"{path}: key 'groups.{str(name)[:40]}'"
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: must be a non-empty list of indices")
        idx = parse_index_list(items, where, size)
        for i in idx:
            if i not in selected:
                raise ConfigError(f"{where}: index {i} is not in joint_idx")
            if i in seen:
                raise ConfigError(f"{where}: index {i} is already in group '{seen[i]}'")
            seen[i] = name
        groups[name] = sorted(idx)
    uncovered = sorted(selected - set(seen))
    if uncovered:
        raise ConfigError(f"{path}: key 'groups': joint_idx indices {uncovered[:20]} are in no "
                          "group")
    cfg["joint_idx"] = sorted(joints)  # the model always sees ascending stored order (as the reference)
    cfg["groups"] = groups
    if cfg["rest_hand_cutoff"] > 0:
        try:
            rest_hand_points(cfg)
        except ValueError as e:
            raise ConfigError(f"{path}: key 'rest_hand_cutoff': {e}") from None
    if cfg["dominant_hand_ratio"] > 0 and len(hand_positions(cfg)) != 2:
        raise ConfigError(f"{path}: key 'dominant_hand_ratio': needs both hands in joint_idx")


class _Refused(yaml.YAMLError):
    """YAML that parses but is refused (too large after aliases, a number that is not finite)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one
    silently), a document that expands to more than MAX_YAML_VALUES values through its aliases
    ("billion laughs") or holds itself, and .inf/.nan."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.YAMLError(f"key {brief(key)} is given twice (line {line})")
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)

    def compose_document(self):
        node = super().compose_document()
        check_expansion(node)
        return node

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            line = node.start_mark.line + 1
            raise _Refused(f"{brief(node.value, 20)} (line {line}) is not a finite number")
        return value


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _UniqueKeyLoader.construct_yaml_float)


def _children(node):
    """The nodes inside a YAML node (a mapping: its keys and values), None for a scalar."""
    if isinstance(node, yaml.MappingNode):
        return (n for pair in node.value for n in pair)
    return iter(node.value) if isinstance(node, yaml.SequenceNode) else None


def check_expansion(root) -> None:
    """Refuse a composed YAML document that stands for more than MAX_YAML_VALUES values, an alias
    counted as all it repeats (util.expanded_size: counted without expanding), or an alias inside
    its own anchor."""
    try:
        expanded_size(root, _children, limit=MAX_YAML_VALUES)
    except Expansion as e:
        if e.reason == "itself":
            raise _Refused(f"an alias inside its own anchor (line {e.item.start_mark.line + 1})") \
                from None
        raise _Refused(f"the document expands to more than {MAX_YAML_VALUES:,} values (aliases "
                       "counted as what they repeat)") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """e.g. "expected the node content, but found '<stream end>' (line 2)": what PyYAML found, where."""
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if not problem:
        return str(error).splitlines()[0]
    return f"{problem} (line {mark.line + 1})" if mark else problem


def parse_yaml(text: str, where: str, invalid: str = "not valid YAML") -> object:
    """The YAML document in `text` (_UniqueKeyLoader); ConfigError `where: ...` when it is
    refused."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {invalid} ({yaml_problem(e)})") from None
    except RecursionError:
        raise ConfigError(f"{where}: {invalid} (nested too deeply)") from None
    except ValueError as e:  # an integer of more than 4300 digits, a date such as 2024-13-01
        raise ConfigError(f"{where}: {invalid} ({str(e).split(':')[0][:80]})") from None


def read_yaml(path) -> object:
    """The YAML document of a file; ConfigError (one line naming the file) when it cannot be read or
    parsed, or is larger than MAX_CONFIG_BYTES (checked before it is parsed)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); expected a YAML config") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; a config is a short "
                          "YAML file (~1 KB)")
    return parse_yaml(text, str(path))


def load_config(path: str, overrides=()) -> dict:
    """Read and validate a YAML config, with `--set KEY=VALUE` overrides applied first; returns a
    plain dict with index lists expanded and defaults filled (`overrides` records the --set items)."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
    return check_config(apply_overrides(raw, overrides), path, overrides)


def check_config(raw: dict, path: str, overrides=()) -> dict:
    """Validate a config mapping (load_config's checks, for a mapping read elsewhere, e.g. a model
    card); `path` names it in every error."""
    cfg = _check_types(raw, path)
    _check_training(raw, cfg, path)
    _check_values(cfg, path)
    _check_indices(cfg, path)
    cfg["config_path"] = str(path)
    cfg["overrides"] = list(overrides)
    return cfg


def num_keypoints(cfg: dict) -> int:
    return len(cfg["joint_idx"])


def readable_layouts(cfg: dict) -> tuple:
    """Stored layouts (keypoint counts) whose pickles this config can read."""
    return READABLE_FROM[cfg["layout"]]


def model_hparams(cfg: dict) -> dict:
    """The subset of the config that defines the network (what a model card / metadata records)."""
    keys = [k for k in REQUIRED if k not in ("layout", "joint_idx", "groups")] + ["attention_mask_value"]
    return {k: cfg[k] for k in keys} | {"num_keypoints": num_keypoints(cfg)}


def validate(paths: list[str]) -> int:
    """Validate each config; exit status 1 when any is bad (each bad one gets an ERROR line), else 0."""
    failed = 0
    for p in paths:
        try:
            c = load_config(p)
        except ConfigError as e:
            print(f"ERROR {e}", file=sys.stderr)
            failed += 1
            continue
        sizes = {name: len(idx) for name, idx in c["groups"].items()}
        rest = f", resting hands > {c['rest_hand_cutoff']} shoulder widths" if c["rest_hand_cutoff"] else ""
        rest += f", left-handed clips mirrored (ratio {c['dominant_hand_ratio']:g})" if c["dominant_hand_ratio"] else ""
        print(f"{p}: layout {c['layout']}, K={num_keypoints(c)}, classes={c['num_labels']}, groups {sizes}{rest}")
    return 1 if failed else 0


@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file(s)")
    ap.add_argument("--recipe", action="store_true",
                    help="print the pipeline's settings with this config's training: block "
                         "(one config; NAME=value lines, read by run_end_to_end_pipeline.sh)")
    ap.add_argument("--demo", action="store_true", help="--recipe: the demo dataset's budgets")
    args = ap.parse_args(argv)
    if not args.recipe:
        return validate(args.configs)
    if len(args.configs) != 1:
        raise UserError(f"--recipe takes one config, got {len(args.configs)}")
    print_settings(pipeline_defaults(args.demo, load_config(args.configs[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
