"""Extract 63-keypoint pickles: extract_65_keypoints.py with --layout 63 as the default (same flags).

    python extract_63_keypoints.py --input_dir VIDEOS --output_dir data/arabic-asl-63kpts
"""
import sys

from extract_65_keypoints import main

if __name__ == "__main__":
    sys.exit(main(layout_default=63))
