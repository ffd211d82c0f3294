"""common/course_data.py: the course folders are found, linked where the configs look, and what is
missing is one line per project."""
from common.course_data import COURSE_DATA, main

FOLDER_MARKERS = {"audio/train/weak", "train-clean-100", "test-clean", "Flicker8k_Dataset"}


def make_course_copy(root):
    """A fake of the course's folders, nested the way a copy might be."""
    for project, need in COURSE_DATA.items():
        folder = root / "course" / project / "data"
        for marker in need.markers:
            path = folder / marker.split("|")[0]
            if marker in FOLDER_MARKERS:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("x")
    return root / "course"


def test_course_folders_are_linked_then_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DATA_ROOTS", str(make_course_copy(tmp_path)))
    repo = tmp_path / "repo"
    assert main(["--repo", str(repo)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["linked"] * 6
    for project, need in COURSE_DATA.items():
        assert (repo / need.link).resolve() == tmp_path / "course" / project / "data"
    assert main(["--repo", str(repo), "sed", "lm"]) == 0  # a second run checks and keeps the links
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()] == [["ok", "sed:"], ["ok", "lm:"]]


def test_missing_course_data_is_one_line_per_project_and_exit_1(tmp_path, monkeypatch, capsys):
    course = make_course_copy(tmp_path)
    (course / "sed" / "data" / "label" / "train" / "weak.csv").unlink()
    monkeypatch.setenv("COURSE_DATA_ROOTS", str(course))
    assert main(["--repo", str(tmp_path / "repo"), "sed", "vae"]) == 1
    sed_line, vae_line = capsys.readouterr().out.splitlines()
    assert sed_line == (f"missing  sed: no folder with audio/train/weak + label/train/weak.csv|metadata/train/weak.csv "
                        f"under {course}; set COURSE_DATA_ROOTS=<folder> if your copy is elsewhere, or see "
                        f"sed/README.md to get the data")
    assert vae_line.startswith("linked   vae: data/mnist -> ")
