"""Build KArSL-100 (signs 71..170 of KArSL-502) from KArSL-502 keypoints or videos, with links.

    python build_karsl_subset.py --input_dir data/karsl502-63kpts --output_dir data/karsl100-63kpts
    python build_karsl_subset.py --input_dir KArSL-502 --output_dir KArSL-100 --mode copy  # videos
    python build_karsl_subset.py --input_dir data/karsl502-63kpts --output_dir data/karsl-s10 \\
        --start 1 --end 10

Input, either
  keypoints   <input_dir>/all/G0071/*.pkl + label2id.json (extract_63_keypoints.py, KArSL release)
  videos      <input_dir>/<signer>/<train|test>/<NNNN>/*.mp4, the KArSL release (layouts.py)
Output, the same layout with only the signs numbered --start..--end:
  keypoints   <output_dir>/all/G0071..G0170/*.pkl; label2id.json and id2label.json over the kept
              signs, relabelled 0..N-1 in sign order (KArSL-100: 0..99, as
              configs/karsl100-63kpts.yaml expects); label2name.json when the input has one
  videos      <output_dir>/<signer>/<part>/0071..0170/*.mp4, ready for extract_63_keypoints.py
  both        subset_info.json: input, range, mode, signs kept, samples per sign, signs missing
Every file is a relative symlink (--mode symlink, the default), a hard link or a copy.
Re-running is idempotent: correct entries are kept, wrong ones replaced, links of signs or samples
no longer selected removed; any other file found in the output is left alone and named.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fix_loso import is_correct_link, make_link
from layouts import DIGITS, KARSL_PARTS, detect_source, subdirs
from util import HelpFormatter, UserError, atomic_write_json, cli, read_json

KARSL100 = (71, 170)  # KArSL-100: signs 71..170 of KArSL-502
MODES = ("symlink", "hardlink", "copy")
SIGN_DIR = re.compile(r"^G?(\d+)$")  # G0071 (keypoints) or 0071 (videos)


@dataclass
class Tally:
    """What a run did: created / replaced / kept / removed counts, and the files it left alone."""
    counts: Counter = field(default_factory=Counter)
    foreign: list = field(default_factory=list)

    def remove_stale(self, entry: Path) -> None:
        """A link is this tool's and goes; anything else is the user's and is only named."""
        if entry.is_symlink():
            entry.unlink()
            self.counts["removed"] += 1
        else:
            self.foreign.append(entry)


# ----------------------------------------------------------------------------------------------- files
def is_current(dest: Path, src: Path, mode: str) -> bool:
    if mode != "copy":
        return is_correct_link(dest, src, mode)
    if dest.is_symlink() or not dest.is_file():
        return False
    s, d = src.stat(), dest.stat()
    return (s.st_size, int(s.st_mtime)) == (d.st_size, int(d.st_mtime))  # copy2 keeps the time


def place(dest: Path, src: Path, mode: str) -> None:
    """Create or replace dest atomically (made under a temp name, then renamed over it)."""
    if mode != "copy":
        return make_link(dest, src, mode)
    tmp = dest.with_name(f".{dest.name}.copy.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def mirror_folder(src_dir: Path, dest_dir: Path, mode: str, tally: Tally) -> int:
    """dest_dir/<name> for every file of src_dir, stale links removed; -> the number of files."""
    if dest_dir.is_symlink() or (dest_dir.exists() and not dest_dir.is_dir()):
        raise UserError(f"{dest_dir}: not a folder; move it away")
    dest_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for src in files:
        dest = dest_dir / src.name
        if is_current(dest, src, mode):
            tally.counts["kept"] += 1
        else:
            tally.counts["replaced" if dest.exists() or dest.is_symlink() else "created"] += 1
            place(dest, src, mode)
    names = {p.name for p in files}
    for entry in dest_dir.iterdir():
        if entry.name not in names:
            tally.remove_stale(entry)
    return len(files)


def sign_number(name: str) -> int | None:
    match = SIGN_DIR.match(name)
    return int(match.group(1)) if match else None


def selected(folders: list[Path], start: int, end: int) -> list[Path]:
    return [d for d in folders if (n := sign_number(d.name)) is not None and start <= n <= end]


def prune(parent: Path, keep: set[str], tally: Tally) -> None:
    """Sign entries of an output folder no longer selected: their links go, the rest is named."""
    if not parent.is_dir():
        return
    for entry in sorted(parent.iterdir()):
        if entry.name in keep or sign_number(entry.name) is None:
            continue
        if entry.is_dir() and not entry.is_symlink():
            for inner in entry.iterdir():
                tally.remove_stale(inner)
            if not any(entry.iterdir()):
                entry.rmdir()
        else:
            tally.remove_stale(entry)


# ----------------------------------------------------------------------------------------------- inputs
def subset_keypoints(src: Path, out: Path, args, tally: Tally) -> tuple[dict, list[str]]:
    """-> ({sign: samples}, signs of the range in the input's label map but without samples)."""
    label2id = read_json(src / "label2id.json", "label2id.json")
    signs = selected(subdirs(src / "all"), args.start, args.end)
    if not signs:
        raise UserError(f"--input_dir {src}: no sign numbered {args.start}..{args.end} in all/")
    per_sign = {d.name: mirror_folder(d, out / "all" / d.name, args.mode, tally) for d in signs}
    prune(out / "all", set(per_sign), tally)
    kept = sorted(per_sign, key=sign_number)
    atomic_write_json(out / "label2id.json", {s: i for i, s in enumerate(kept)})
    atomic_write_json(out / "id2label.json", {str(i): s for i, s in enumerate(kept)})
    if (src / "label2name.json").is_file():
        names = read_json(src / "label2name.json", "label2name.json")
        atomic_write_json(out / "label2name.json", {s: names[s] for s in kept if s in names})
    missing = sorted((s for s in label2id if args.start <= (sign_number(s) or 0) <= args.end
                      and s not in per_sign), key=sign_number)
    return per_sign, missing


def subset_videos(src: Path, out: Path, args, tally: Tally) -> dict:
    """-> {sign folder: videos, summed over the signers and parts}."""
    per_sign = Counter()
    for signer in (d for d in subdirs(src) if DIGITS.match(d.name)):
        for part in KARSL_PARTS:
            if not (signer / part).is_dir():
                continue
            signs = selected(subdirs(signer / part), args.start, args.end)
            dest = out / signer.name / part
            for d in signs:
                per_sign[d.name] += mirror_folder(d, dest / d.name, args.mode, tally)
            prune(dest, {d.name for d in signs}, tally)
    return dict(sorted(per_sign.items()))


# ----------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--input_dir", default="data/karsl502-63kpts",
                    help="KArSL-502: keypoint dataset (all/G*/ + label2id.json) or video release")
    ap.add_argument("--output_dir", default="data/karsl100-63kpts", help="the subset to write")
    ap.add_argument("--start", type=int, default=KARSL100[0], help="first sign number kept")
    ap.add_argument("--end", type=int, default=KARSL100[1], help="last sign number kept")
    ap.add_argument("--mode", default="symlink", choices=MODES,
                    help="relative symlinks, hard links (same file system) or copies")
    args = ap.parse_args(argv)
    if not 1 <= args.start <= args.end:
        raise UserError(f"--start {args.start} --end {args.end}: need 1 <= start <= end")
    return args


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    src, out = Path(args.input_dir), Path(args.output_dir)
    if not src.is_dir():
        raise UserError(f"--input_dir {src}: folder not found")
    if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()):
        raise UserError(f"--output_dir {out}: must not be --input_dir or inside it")
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out}: is a file, not a folder")
    tally, missing = Tally(), []
    if (src / "label2id.json").is_file() and (src / "all").is_dir():
        kind = "keypoints"
        per_sign, missing = subset_keypoints(src, out, args, tally)
    elif detect_source(src) == "karsl":
        kind = "videos"
        per_sign = subset_videos(src, out, args, tally)
    else:
        raise UserError(f"--input_dir {src}: neither a keypoint dataset (all/ + label2id.json) nor "
                        "a KArSL video release (<signer>/<train|test>/<NNNN>/)")
    if not per_sign:
        raise UserError(f"--input_dir {src}: no sign numbered {args.start}..{args.end}")
    atomic_write_json(out / "subset_info.json", {
        "input_dir": str(src), "kind": kind, "start": args.start, "end": args.end,
        "mode": args.mode, "signs": list(per_sign), "samples_per_sign": per_sign,
        "missing_signs": missing})
    c = tally.counts
    print(f"{out}: {len(per_sign)} signs ({next(iter(per_sign))}..{list(per_sign)[-1]}), "
          f"{sum(per_sign.values())} {kind} files from {src}; {args.mode}: {c['created']} created, "
          f"{c['replaced']} replaced, {c['kept']} kept, {c['removed']} stale removed")
    if missing:
        print(f"note: {len(missing)} sign(s) of the range are in the input's label map but have no "
              f"samples: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    for entry in tally.foreign:
        print(f"note: left alone (not made by this tool): {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
