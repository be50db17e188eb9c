"""Every default of the recipes is written once, in recipes.py: no other module of the repository
gives one of recipes.SETTINGS a literal default (an argparse `default=` or `set_defaults`, a
settings dataclass field, a function parameter, a `.get(NAME, default)`, a config table entry), and
no module spells out the default dataset name. Read from the source (AST), nothing imported."""
import ast
from pathlib import Path

import pytest

import recipes

REPO = Path(__file__).resolve().parents[1]
# (file, setting): why its literal default is not a recipe default
NOT_RECIPE = {("make_demo_dataset.py", "seed"): "the demo dataset generator's seed, not a training seed"}
KERAS_NAMES = ("clipnorm", "factor", "patience")  # the schedule and clipping settings, as Keras calls them


def is_literal(node) -> bool:
    """A written-out value; None and "" mean 'not given' (resolved later from recipes.py)."""
    return isinstance(node, ast.Constant) and node.value is not None and node.value != ""


def is_number(node) -> bool:
    return is_literal(node) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def flag_name(call: ast.Call) -> str:
    for keyword in call.keywords:
        if keyword.arg == "dest" and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    first = call.args[0]
    return str(first.value).lstrip("-") if isinstance(first, ast.Constant) else ""


def call_defaults(call: ast.Call):
    """(name, value) of argparse defaults, `.get(NAME, value)` and Keras keyword arguments."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else ""
    if name == "add_argument" and call.args:
        yield from ((flag_name(call), k.value) for k in call.keywords if k.arg == "default")
    elif name == "set_defaults":
        yield from ((k.arg, k.value) for k in call.keywords)
    elif name == "get" and len(call.args) == 2 and isinstance(call.args[0], ast.Constant):
        yield call.args[0].value, call.args[1]
    yield from ((k.arg, k.value) for k in call.keywords if k.arg in KERAS_NAMES)


def parameter_defaults(function):
    args = function.args
    positional = args.posonlyargs + args.args
    yield from zip((a.arg for a in positional[len(positional) - len(args.defaults):]), args.defaults)
    yield from ((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)


def literal_defaults(tree: ast.AST):
    """(line, name) of every literal default of a setting or Keras schedule keyword in a module."""
    watched = set(recipes.SETTINGS) | set(KERAS_NAMES)
    for node in ast.walk(tree):
        pairs = []
        if isinstance(node, ast.Call):
            pairs = [(name, value) for name, value in call_defaults(node) if is_literal(value)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pairs = [(name, value) for name, value in parameter_defaults(node) if is_literal(value)]
        elif isinstance(node, ast.ClassDef):
            pairs = [(s.target.id, s.value) for s in node.body if isinstance(s, ast.AnnAssign)
                     and isinstance(s.target, ast.Name) and s.value is not None and is_literal(s.value)]
        elif isinstance(node, ast.Dict):  # {"key": 0.0} or config.py's {"key": (type, default)}
            for key, value in zip(node.keys, node.values):
                if isinstance(value, ast.Tuple) and len(value.elts) == 2:
                    value = value.elts[1]
                if isinstance(key, ast.Constant) and is_number(value):
                    pairs.append((key.value, value))
        yield from ((getattr(value, "lineno", 0), name) for name, value in pairs if name in watched)


def modules():
    return [path for path in sorted(REPO.glob("*.py")) if path.name != "recipes.py"]


def test_recipes_docstring_lists_every_setting():
    missing = [name for name in recipes.SETTINGS if name not in recipes.__doc__]
    assert not missing, f"recipes.py's docstring does not list {missing}"


def test_no_module_but_recipes_writes_a_literal_default():
    found = [f"{path.name}:{line}: {name}"
             for path in modules()
             for line, name in literal_defaults(ast.parse(path.read_text(encoding="utf-8")))
             if (path.name, name) not in NOT_RECIPE]
    assert not found, "literal defaults outside recipes.py (use its constant): " + ", ".join(found)


def test_the_default_dataset_name_is_spelled_out_only_in_recipes():
    found = [f"{path.name}:{node.lineno}" for path in modules()
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Constant) and node.value == recipes.DEFAULT_DATASET_NAME]
    assert not found, f"'{recipes.DEFAULT_DATASET_NAME}' written out instead of DEFAULT_DATASET_NAME: {found}"


@pytest.mark.parametrize("source, expected", [
    ('ap.add_argument("--scheduler_factor", type=float, default=0.1)', ["scheduler_factor"]),
    ('ap.set_defaults(dataset_name="x")', ["dataset_name"]),
    ("class S:\n    early_stop_patience: int = 10", ["early_stop_patience"]),
    ("def f(x, label_smoothing=0.0): pass", ["label_smoothing"]),
    ('cutoff = cfg.get("rest_hand_cutoff", 0.0)', ["rest_hand_cutoff"]),
    ('OPTIONAL = {"dominant_hand_ratio": (float, 0.0)}', ["dominant_hand_ratio"]),
    ("opt = Adam(learning_rate=lr, clipnorm=1.0)", ["clipnorm"]),
    ('ap.add_argument("--epochs", type=int, default=None)', []),
    ("def f(x, lr=FP32_LR, seed=DEFAULT_SEED): pass", []),
])
def test_the_check_finds_each_kind_of_literal_default(source, expected):
    assert [name for _, name in literal_defaults(ast.parse(source))] == expected
