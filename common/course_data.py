"""From a fresh clone on the course cluster to the first job: find the course's data (the folders the
course handout names), link each where that project's configs look for it (`data/...` in the
repository), and say in one line per project what is there or what is missing.

    python -m common.course_data                 # all six projects
    python -m common.course_data sed lm          # some of them
    COURSE_DATA_ROOTS=/my/copy:/other python -m common.course_data   # search other folders instead

A project whose folder is found in neither place gets one line naming the files looked for and where;
the exit status is then 1. Existing folders or links under data/ are checked, never replaced.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from common.config import REPO_ROOT

# The course handout's locations on the cluster.
LM_VALLE_VAE_ROOT = "/lustre/home/acct-stu/stu281/deeplearning_course_sjtu"
PROJECT_DATA_ROOT = "/lustre/home/acct-stu/stu282/Data"


@dataclasses.dataclass(frozen=True)
class CourseData:
    link: str                  # where the project's configs look, relative to the repository
    handout_root: str          # searched (4 levels deep) for a folder holding every marker
    markers: tuple[str, ...]   # paths inside that folder; "a|b": either


COURSE_DATA = {
    "lm": CourseData("data/lm/gigaspeech", LM_VALLE_VAE_ROOT, ("train.txt", "valid.txt", "test.txt")),
    "vae": CourseData("data/mnist", LM_VALLE_VAE_ROOT,
                      ("train-images-idx3-ubyte|train-images-idx3-ubyte.gz",
                       "t10k-images-idx3-ubyte|t10k-images-idx3-ubyte.gz")),
    "valle_tts": CourseData("data/LibriSpeech", LM_VALLE_VAE_ROOT, ("train-clean-100", "test-clean")),
    "sed": CourseData("data/dcase2018_task4", f"{PROJECT_DATA_ROOT}/sound_event_detection",
                      ("audio/train/weak", "label/train/weak.csv|metadata/train/weak.csv")),
    "captioning": CourseData("data/flickr8k", f"{PROJECT_DATA_ROOT}/image_captioning",
                             ("Flickr8k.token.txt", "Flicker8k_Dataset")),
    "av_scene": CourseData("data/av_scene", f"{PROJECT_DATA_ROOT}/av_scene_classify",
                           ("evaluation_setup/fold1_train.csv", "audio_features_data/train.hdf5",
                            "video_features_data/train.hdf5")),
}
SEARCH_DEPTH = 4


def holds_markers(folder: Path, markers: tuple[str, ...]) -> bool:
    return all(any((folder / option).exists() for option in marker.split("|")) for marker in markers)


def find_folder(roots: list[Path], markers: tuple[str, ...]) -> Path | None:
    """The shallowest folder under `roots` (breadth first, names sorted) that holds every marker."""
    level = [root for root in roots if root.is_dir()]
    for _ in range(SEARCH_DEPTH + 1):
        for folder in level:
            if holds_markers(folder, markers):
                return folder
        level = [child for folder in level for child in sorted(_subfolders(folder))]
    return None


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except PermissionError:
        return []


def set_up(project: str, repo: Path, roots: list[Path] | None) -> tuple[bool, str]:
    """(ready, one line): check data/<...>, or find the course folder and link it there."""
    need = COURSE_DATA[project]
    link = repo / need.link
    wanted = " + ".join(need.markers)
    if link.exists():
        if holds_markers(link, need.markers):
            return True, f"ok       {project}: {need.link} -> {link.resolve()}"
        return False, f"missing  {project}: {need.link} exists but lacks {wanted}; fix or remove it and rerun"
    search = roots or [Path(need.handout_root)]
    found = find_folder(search, need.markers)
    if found is None:
        where = ", ".join(str(r) for r in search)
        return False, (f"missing  {project}: no folder with {wanted} under {where}; set COURSE_DATA_ROOTS=<folder> "
                       f"if your copy is elsewhere, or see {project}/README.md to get the data")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(found, target_is_directory=True)
    return True, f"linked   {project}: {need.link} -> {found}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("projects", nargs="*", metavar="PROJECT",
                        help=f"any of {', '.join(COURSE_DATA)} (default: all)")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="the repository whose data/ gets the links")
    args = parser.parse_args(argv)
    unknown = [p for p in args.projects if p not in COURSE_DATA]
    if unknown:
        parser.error(f"unknown project {', '.join(unknown)}; choose from {', '.join(COURSE_DATA)}")
    roots = [Path(p) for p in os.environ.get("COURSE_DATA_ROOTS", "").split(":") if p] or None
    results = [set_up(project, args.repo, roots) for project in args.projects or COURSE_DATA]
    for _, line in results:
        print(line)
    return 0 if all(ready for ready, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
