"""Build Leave-One-Signer-Out splits of a dataset root with links instead of copies; idempotent; leakage-checked.

    python fix_loso.py --base_root data/arabic-asl-65kpts --holdouts user01,user08,user11
    python fix_loso.py --base_root data/lsa64-63kpts --holdouts all
    python fix_loso.py --base_root data/arabic-asl-65kpts --holdouts user01 --gestures G01-G05 --link hardlink

For each holdout signer U it makes <base_root>_LOSO_U/:
  train/GYY/<sample>.pkl   link to <base_root>/all/GYY/<sample>.pkl of every OTHER signer
  test/GYY/<sample>.pkl    link to U's samples
  label2id.json, id2label.json (and label2name.json when present), copied from <base_root>
Links are relative symlinks by default: they see re-extracted pickles, and the splits keep working when the data
folder moves as a whole. --link hardlink makes hard links instead (same file system only; re-extracting writes new
files, so run fix_loso.py again afterwards).

Re-running is idempotent: correct links are kept, missing or wrong ones (e.g. the copies of an older tool) replaced,
and stale entries of train/ and test/ (deleted samples, signs no longer selected) removed. Only entries this tool
(or the older one) makes are ever removed: links, and sample files named userXX_GYY_*.pkl. Any other file in a
split folder keeps its place and is named in the summary; a .pkl among them is refused (training would read it).
Signer and sign come from the file name (userXX_GYY_*.pkl), else from the pickle's `user` / `class` fields; they
become folder names, so they must be simple names (letters, digits, '_', '-', '.', not starting with '.').
Afterwards each split is read back from disk and checked: the held-out signer only in test, every other sample only
in train, each sample of <base_root>/all exactly once; the summary says so, and a violation is an error.

A split is made completely or not at all: everything is checked first (names the file system cannot
hold, links in the data that loop or point nowhere, foreign .pkl files), the new train/ and test/
are built and leakage-checked in a folder beside the split, and only then moved into place; a
failure on the way leaves the previous split as it was.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from dataset import DataError, load_sample, resolvable
from recipes import DEFAULT_HOLDOUTS
from runs import USER_RE, comma_list, loso_data_path, parse_holdouts, parse_sample_name
from util import UserError, atomic_write_bytes, cli, read_json

SPLITS = ("train", "test")
LABEL_FILES = ("label2id.json", "id2label.json", "label2name.json")
SIMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # one path component that stays in its folder


@dataclass(frozen=True)
class Sample:
    path: Path  # <base_root>/all/GYY/<name>.pkl
    user: str
    sign: str


# ----------------------------------------------------------------------------------------------- the base dataset
def sign_number(sign: str) -> int:
    digits = re.sub(r"\D", "", sign)
    return int(digits) if digits else -1


def parse_gestures(arg: str, base_root: Path) -> list[str]:
    """'auto' (label2id.json keys, else all/G* folders), a range 'G01-G10' (zero padding of the bounds kept),
    or a comma list 'G01,G03'."""
    if arg == "auto":
        label_map = base_root / "label2id.json"
        if label_map.is_file():
            labels = read_json(label_map, "label map label2id.json", DataError)
            if not isinstance(labels, dict):
                raise DataError(f"{label_map}: expected {{\"label\": id, ...}}, got {type(labels).__name__}")
            return sorted(labels, key=lambda s: (sign_number(s), s))
        folders = [d.name for d in (base_root / "all").glob("G*")
                   if re.fullmatch(r"G\d+", d.name) and resolvable(d).is_dir()]
        return sorted(folders, key=sign_number)
    bounds = re.fullmatch(r"G(\d+)-G(\d+)", arg.strip())
    if bounds:
        width, first, last = len(bounds.group(1)), int(bounds.group(1)), int(bounds.group(2))
        return [f"G{i:0{width}d}" for i in range(first, last + 1)]
    signs = comma_list(arg)
    if not signs:
        raise UserError(f"--gestures {arg!r}: expected 'auto', a range like G01-G10 or a comma list")
    return signs


def check_simple_name(name, where: str) -> str:
    """A signer or sign name that becomes a folder name: refused unless it is one plain path component."""
    if not (isinstance(name, str) and SIMPLE_NAME.match(name)):
        raise DataError(f"{where} {name!r} is not a simple name (letters, digits, '_', '-', '.'; "
                        "no '/', no leading '.'); it would become a folder name")
    return name


def identify(path: Path) -> tuple[str, str]:
    """(user, sign) of a sample: from its file name, else from the pickle's fields."""
    parsed = parse_sample_name(path.name)
    if parsed:
        return parsed
    sample = load_sample(path)
    user, sign = sample.get("user"), sample.get("class")
    if not (isinstance(user, str) and USER_RE.match(user) and isinstance(sign, str)):
        raise DataError(f"{path}: cannot tell its signer: the name is not userXX_GYY_*.pkl and the pickle has "
                        f"user={user!r}, class={sign!r}")
    return user, check_simple_name(sign, f"{path}: class")


def base_samples(base_root: Path, signs: list[str]) -> list[Sample]:
    """Every pickle of <base_root>/all/<sign>/ for the selected signs (symlinked sign folders followed)."""
    samples = []
    for sign in signs:
        folder = base_root / "all" / check_simple_name(sign, "sign")
        if resolvable(folder).is_dir():
            samples += [Sample(p, *identify(resolvable(p))) for p in sorted(folder.glob("*.pkl"))]
    if not samples:
        raise UserError(f"{base_root}/all: no .pkl samples for gestures {signs[0]}..{signs[-1]}")
    return samples


# ----------------------------------------------------------------------------------------------- links
def link_target(src: Path, dest: Path) -> str:
    return os.path.relpath(src, dest.parent)


def is_correct_link(dest: Path, src: Path, mode: str) -> bool:
    if mode == "symlink":
        return dest.is_symlink() and os.readlink(dest) == link_target(src, dest)
    return dest.is_file() and not dest.is_symlink() and os.path.samefile(dest, src)


def make_link(dest: Path, src: Path, mode: str) -> None:
    """Create or replace dest atomically (a temp link, named to fit any file system, renamed over
    it)."""
    tmp = dest.with_name(f".link-{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    if mode == "symlink":
        os.symlink(link_target(src, dest), tmp)
    else:
        os.link(src, tmp)
    os.replace(tmp, dest)


def made_by_a_split_tool(entry: Path) -> bool:
    """A link (symbolic or hard), or a sample copy named userXX_GYY_*.pkl (what an older tool made)."""
    if entry.is_symlink():
        return True
    return entry.is_file() and (os.stat(entry).st_nlink > 1 or parse_sample_name(entry.name) is not None)


def split_entries(loso_root: Path):
    """Every entry of <loso_root>/{train,test} that a split is made of: the entries of each sign
    folder, and what sits in a split folder beside them (a symlinked split or sign folder is one
    entry: it is unlinked, never emptied). A file in place of a split folder is refused."""
    for split in SPLITS:
        folder = loso_root / split
        if folder.is_symlink():
            yield folder
        elif folder.exists() and not folder.is_dir():
            raise UserError(f"{folder}: a file where the split folder goes; fix_loso.py did not "
                            "create it, move it away")
        elif folder.exists():
            for entry in sorted(folder.iterdir()):
                is_sign_folder = entry.is_dir() and not entry.is_symlink()
                yield from sorted(entry.iterdir()) if is_sign_folder else [entry]


def plan_split(loso_root: Path, wanted: dict[Path, Path], mode: str) -> tuple[Counter, list[Path]]:
    """What making the split `wanted` ({relative dest: source}) changes, read from the split on
    disk: links created, replaced, kept, stale entries removed; and the entries no split tool made
    (they keep their place). Writes nothing; a foreign .pkl (training would read it) is refused."""
    counts, foreign = Counter(), []
    for entry in split_entries(loso_root):
        rel = entry.relative_to(loso_root)
        if rel in wanted:
            counts["kept" if is_correct_link(entry, wanted[rel], mode) else "replaced"] += 1
        elif made_by_a_split_tool(entry) or entry.parent == loso_root:
            counts["removed"] += 1
        else:
            foreign.append(entry)
    counts["created"] = len(wanted) - counts["kept"] - counts["replaced"]
    samples = [f for f in foreign if f.suffix == ".pkl"]
    if samples:
        raise UserError(f"{samples[0]}: a .pkl that fix_loso.py did not create is in a split folder (training "
                        f"would read it; {len(samples)} such file(s)); move it out of {loso_root}")
    return counts, foreign


def check_names(loso_root: Path, wanted: dict[Path, Path]) -> None:
    """Refuse, before anything is written, a name of the split that its file system cannot hold."""
    existing = next(p for p in loso_root.parents if p.exists())  # (a stat of a long name fails)
    limit = os.pathconf(existing, "PC_NAME_MAX")
    names = {loso_root.name} | {part for rel in wanted for part in rel.parts}
    for name in sorted(names):
        if len(os.fsencode(name)) > limit:
            raise UserError(f"{loso_root}: the name {name[:40]}... is {len(os.fsencode(name))} bytes "
                            f"long; this file system holds names of up to {limit}")


def staging_folder(loso_root: Path) -> Path:
    """The folder beside the split where its new train/ and test/ are built (at the split's depth,
    so that relative links resolve alike); one left by an interrupted run is removed when it holds
    only links."""
    digest = hashlib.sha1(loso_root.name.encode()).hexdigest()[:8]
    staging = loso_root.with_name(f".{loso_root.name[:100]}-{digest}.building")
    if staging.is_symlink() or staging.exists():
        kept = [Path(top, name) for top, dirs, files in os.walk(staging) for name in dirs + files
                if not made_by_a_split_tool(Path(top, name)) and not os.path.isdir(Path(top, name))]
        if kept:
            raise UserError(f"{staging}: left by an interrupted fix_loso.py run and holds "
                            f"{kept[0].name}, which it did not make; move your files out of it and "
                            "remove it")
        shutil.rmtree(staging)
    return staging


def build_links(staging: Path, wanted: dict[Path, Path], mode: str) -> None:
    for rel, src in sorted(wanted.items()):
        dest = staging / rel
        if not dest.parent.resolve().is_relative_to(staging.resolve()):  # a last guard
            raise UserError(f"{dest}: would be outside {staging}; refused")
        dest.parent.mkdir(parents=True, exist_ok=True)
        make_link(dest, src, mode)


def swap_in(staging: Path, loso_root: Path, foreign: list[Path]) -> None:
    """Move the user's files into the new split, then the new train/ and test/ into place; the old
    ones (links and tool-made copies only, by now) are removed with the staging folder."""
    for entry in foreign:
        target = staging / entry.relative_to(loso_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(entry, target)
    (staging / ".old").mkdir()
    for split in SPLITS:
        if (loso_root / split).is_symlink() or (loso_root / split).exists():
            os.replace(loso_root / split, staging / ".old" / split)
        os.replace(staging / split, loso_root / split)
    shutil.rmtree(staging)


def copy_label_files(base_root: Path, loso_root: Path) -> list[str]:
    copied = []
    for name in LABEL_FILES:
        if (base_root / name).is_file():
            atomic_write_bytes(loso_root / name, (base_root / name).read_bytes())
            copied.append(name)
    return copied


# ----------------------------------------------------------------------------------------------- leakage check
def file_identity(path: Path) -> tuple[int, int]:
    """The same for a file, a symlink to it and a hard link to it."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def check_no_leakage(loso_root: Path, holdout: str, samples: list[Sample],
                     shown: Path | None = None) -> str:
    """Read the split back from disk; raise UserError on any leak (naming `shown`, default
    loso_root), else return the proof as one sentence."""
    found = {split: {} for split in SPLITS}  # split -> {file identity: user}
    for split in SPLITS:
        for entry in sorted((loso_root / split).glob("*/*.pkl")):
            found[split][file_identity(entry)] = identify(entry)[0]
    test_users = set(found["test"].values())
    train_users = set(found["train"].values())
    expected = {file_identity(s.path) for s in samples}
    problems = []
    if test_users - {holdout}:
        problems.append(f"test holds other signers: {sorted(test_users - {holdout})}")
    if holdout in train_users:
        problems.append(f"train holds {holdout}")
    if found["train"].keys() & found["test"].keys():
        problems.append(f"{len(found['train'].keys() & found['test'].keys())} samples are in both splits")
    if found["train"].keys() | found["test"].keys() != expected:
        problems.append("the splits do not hold exactly the samples of all/")
    if problems:
        raise UserError(f"{shown or loso_root}: LEAKAGE CHECK FAILED: " + "; ".join(problems))
    return (f"no leakage: {holdout} only in test ({len(found['test'])} samples), the other {len(train_users)} "
            f"signers only in train ({len(found['train'])} samples), each of the {len(expected)} samples once")


def build_split(base_root: Path, holdout: str, samples: list[Sample], mode: str) -> str:
    """Check, build beside, check for leakage, move into place: the split is made completely or not
    at all."""
    loso_root = loso_data_path(base_root, holdout)
    wanted = {Path("test" if s.user == holdout else "train", s.sign, s.path.name): s.path for s in samples}
    check_names(loso_root, wanted)
    counts, foreign = plan_split(loso_root, wanted, mode)
    staging = staging_folder(loso_root)
    try:
        build_links(staging, wanted, mode)
        proof = check_no_leakage(staging, holdout, samples, shown=loso_root)
        loso_root.mkdir(parents=True, exist_ok=True)
        copied = copy_label_files(base_root, loso_root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # only links: no file of the user's moved yet
        raise
    swap_in(staging, loso_root, foreign)
    missing = "" if "label2id.json" in copied else "; WARNING: no label2id.json in the base root"
    left = (f"; left {len(foreign)} file(s) it did not create, e.g. {foreign[0].relative_to(loso_root)}"
            if foreign else "")
    return (f"{loso_root}: {mode}s {counts['created']} created, {counts['replaced']} replaced, "
            f"{counts['kept']} kept, {counts['removed']} stale removed{missing}{left}\n  {proof}")


# ----------------------------------------------------------------------------------------------- CLI
@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base_root", default="data/arabic-asl-90kpts", help="dataset root holding all/GYY/*.pkl")
    parser.add_argument("--holdouts", default=DEFAULT_HOLDOUTS,
                        help="comma list of held-out signers, or 'all' for every signer found in all/")
    parser.add_argument("--gestures", default="auto",
                        help="'auto' (label2id.json, else all/G* folders), a range G01-G10, or a comma list")
    parser.add_argument("--link", choices=("symlink", "hardlink"), default="symlink", help="how samples are linked")
    args = parser.parse_args(argv)

    base_root = Path(args.base_root.rstrip("/"))
    if not resolvable(base_root / "all").is_dir():
        raise UserError(f"{base_root}/all: folder not found (make the dataset with extract_65_keypoints.py first)")
    samples = base_samples(base_root, parse_gestures(args.gestures, base_root))
    users = sorted({s.user for s in samples})
    holdouts = parse_holdouts(args.holdouts, base_root)
    unknown = [u for u in holdouts if u not in users]
    if unknown:
        raise UserError(f"--holdouts: {', '.join(unknown)} not found in {base_root}/all (signers: {', '.join(users)})")
    print(f"{base_root}: {len(samples)} samples of {len({s.user for s in samples})} signers, "
          f"{len({s.sign for s in samples})} signs; holdouts: {', '.join(holdouts)}")
    for holdout in holdouts:
        if not any(s.user != holdout for s in samples):
            raise UserError(f"{base_root}: {holdout} is the only signer, its split would have no training data")
        print(build_split(base_root, holdout, samples, args.link))


if __name__ == "__main__":
    main()
