"""Video layouts of the public dataset releases -> the videos to extract, named the project's way
(signers userNN, signs GNN). Pure Python (no TensorFlow, no MediaPipe); used by
extract_65_keypoints.py, and so by extract_63_keypoints.py and extract_90_keypoints.py.

Sources (--source of the extractors; `auto` picks one from what is on disk, see detect_source):
  tree   <input_dir>/<user>/<GYY>/<rep>.mp4, e.g. MLR511: user01/G01/R01.mp4 -> user01_G01_R01.pkl;
         every sub-folder is a signer, its sub-folders whose name starts with "G" are signs
  lsa64  <input_dir>/<SSS>_<PPP>_<RRR>.mp4, a flat folder of sign_signer_repetition videos as in
         the LSA64 release (its `all/` and `all_cut/` folders):
         001_001_001.mp4 -> user0001_G01_001_001_001.pkl (signer -> user%04d, sign -> G%02d)
  karsl  <input_dir>/<signer>/<train|test>/<NNNN>/<video>.mp4: a folder per signer (01, 02, 03),
         the release's train and test parts, a numbered folder per sign (0001..0502):
         01/train/0071/v.mp4 -> user01_G0071_train_v.pkl (signer -> user%02d, sign -> G%04d; the
         part stays in the name, as LOSO splits by signer, not by the release's parts)
.avi and .mov videos are read too. Sources of the layouts: the LSA64 page of its authors
(facundoq.github.io, datasets/lsa64: 64 signs x 10 signers x 5 repetitions, files named
sign_signer_repetition) and the KArSL descriptions (hamzah-luqman.github.io/KArSL: 502 signs x 3
signers, released per signer with train and test parts and 4-digit sign folders).

Sign names (label2name.json): LSA64's are those of its authors' page (signs 02 and 08 are both
"Red" there; kept as published). KArSL ships its names as an Excel sheet (KARSL-502_Labels.xlsx),
which is not read here: KArSL gets no label2name.json.

    python layouts.py VIDEO_DIR [--source auto]     # the layout, number of videos, signers, signs
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from util import UserError, cli

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")
SOURCES = ("tree", "lsa64", "karsl")
LSA64_FILE = re.compile(r"^(\d{3})_(\d{3})_(\d{3})$")  # stem: sign_signer_repetition
KARSL_PARTS = ("train", "test")
DIGITS = re.compile(r"^\d+$")

# LSA64 sign names, G01..G64, as its authors list them.
LSA64_SIGN_NAMES = dict(zip((f"G{i:02d}" for i in range(1, 65)), (
    "Opaque", "Red", "Green", "Yellow", "Bright", "Light-blue", "Colors", "Red",
    "Women", "Enemy", "Son", "Man", "Away", "Drawer", "Born", "Learn",
    "Call", "Skimmer", "Bitter", "Sweet milk", "Milk", "Water", "Food", "Argentina",
    "Uruguay", "Country", "Last name", "Where", "Mock", "Birthday", "Breakfast", "Photo",
    "Hungry", "Map", "Coin", "Music", "Ship", "None", "Name", "Patience",
    "Perfume", "Deaf", "Trap", "Rice", "Barbecue", "Candy", "Chewing-gum", "Spaghetti",
    "Yogurt", "Accept", "Thanks", "Shut down", "Appear", "To land", "Catch", "Help",
    "Dance", "Bathe", "Buy", "Copy", "Run", "Realize", "Give", "Find")))
SIGN_NAMES = {"lsa64": LSA64_SIGN_NAMES}  # source -> {sign: name}; the others define none


@dataclass(frozen=True)
class Video:
    """One input video and where its pickle goes."""
    path: Path
    user: str
    sign: str
    relative: str  # path relative to the input folder, stored as original_path
    stem: str = ""  # the pickle's name after <user>_<sign>_ (default: the video's stem)

    def pickle_path(self, output_dir: Path) -> Path:
        name = f"{self.user}_{self.sign}_{self.stem or self.path.stem}.pkl"
        return output_dir / "all" / self.sign / name


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _video(path: Path, root: Path, user: str, sign: str, stem: str = "") -> Video:
    return Video(path, user, sign, path.relative_to(root).as_posix(), stem)


# ----------------------------------------------------------------------------------------------- the layouts
def tree_videos(root: Path) -> list[Video]:
    """<user>/<G*>/<video>."""
    return [_video(p, root, user_dir.name, sign_dir.name)
            for user_dir in subdirs(root)
            for sign_dir in subdirs(user_dir) if sign_dir.name.startswith("G")
            for p in sorted(sign_dir.iterdir()) if is_video(p)]


def lsa64_videos(root: Path) -> list[Video]:
    """<SSS>_<PPP>_<RRR>.<ext> directly in the folder; other files are not videos of the release."""
    videos = []
    for p in sorted(root.iterdir()):
        match = LSA64_FILE.match(p.stem)
        if match and is_video(p):
            sign, signer, _ = (int(g) for g in match.groups())
            videos.append(_video(p, root, f"user{signer:04d}", f"G{sign:02d}"))
    return videos


def karsl_videos(root: Path) -> list[Video]:
    """<signer>/<train|test>/<NNNN>/<video>, signer and sign folders numbered."""
    videos = []
    for signer_dir in (d for d in subdirs(root) if DIGITS.match(d.name)):
        for part in KARSL_PARTS:
            part_dir = signer_dir / part
            if not part_dir.is_dir():
                continue
            user = f"user{int(signer_dir.name):02d}"
            for sign_dir in (d for d in subdirs(part_dir) if DIGITS.match(d.name)):
                sign = f"G{int(sign_dir.name):04d}"
                videos += [_video(p, root, user, sign, f"{part}_{p.stem}")
                           for p in sorted(sign_dir.iterdir()) if is_video(p)]
    return videos


FINDERS = {"tree": tree_videos, "lsa64": lsa64_videos, "karsl": karsl_videos}
EXPECTED = {"tree": "<user>/<GYY>/<rep>.mp4, e.g. user01/G01/R01.mp4",
            "lsa64": "a flat folder of <sign>_<signer>_<rep>.mp4, e.g. 001_001_001.mp4",
            "karsl": "<signer>/<train|test>/<sign>/<video>.mp4, e.g. 01/train/0071/01.mp4"}


def detect_source(root: Path) -> str:
    """'lsa64' when the folder holds sign_signer_repetition videos, 'karsl' when a numbered
    sub-folder has a train or test part, else 'tree'."""
    if any(LSA64_FILE.match(p.stem) and is_video(p) for p in root.iterdir()):
        return "lsa64"
    numbered = [d for d in subdirs(root) if DIGITS.match(d.name)]
    if any((d / part).is_dir() for d in numbered for part in KARSL_PARTS):
        return "karsl"
    return "tree"


def find_videos(input_dir: Path, source: str = "tree") -> list[Video]:
    """Every video of the input folder in the given layout ('auto': detected), sorted; one clear
    error when there is none or when two videos would be saved under one pickle name."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise UserError(f"--input_dir {input_dir}: folder not found")
    if source == "auto":
        source = detect_source(input_dir)
    if source not in FINDERS:
        raise UserError(f"--source {source}: unknown (choose auto, {', '.join(SOURCES)})")
    videos = FINDERS[source](input_dir)
    if not videos:
        raise UserError(f"--input_dir {input_dir}: no videos found for --source {source} (expected "
                        f"{EXPECTED[source]}; also .avi, .mov)")
    seen = {}
    for v in videos:  # R01.mp4 and R01.avi of one signer and sign would write the same pickle
        clash = seen.setdefault(v.pickle_path(Path()), v)
        if clash is not v:
            raise UserError(f"--input_dir {input_dir}: {clash.relative} and {v.relative} would "
                            f"both be saved as {v.pickle_path(Path()).name}; keep one of them")
    return videos


def sign_names(source: str, signs) -> dict[str, str]:
    """{sign: human name} of the release, for the signs given (empty: the release names none)."""
    names = SIGN_NAMES.get(source, {})
    return {s: names[s] for s in signs if s in names}


# ----------------------------------------------------------------------------------------------- CLI
@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("input_dir", help="folder of videos in one of the release layouts")
    ap.add_argument("--source", default="auto", choices=("auto", *SOURCES),
                    help="layout of input_dir")
    args = ap.parse_args(argv)
    root = Path(args.input_dir)
    source = detect_source(root) if args.source == "auto" and root.is_dir() else args.source
    videos = find_videos(root, source)
    users, signs = {v.user for v in videos}, {v.sign for v in videos}
    print(f"{root}: layout {source}, {len(videos)} videos of {len(users)} signers and {len(signs)} "
          f"signs; first: {videos[0].relative} -> {videos[0].pickle_path(Path()).as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
