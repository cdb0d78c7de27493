"""Split-file parsers (UCF-101, HMDB-51, CoViAR, Kinetics, generic lists) and bad-video handling."""

from __future__ import annotations

import pytest

from teamnet.config import DataConfig
from teamnet.datasets import (
    BadVideoReport,
    ClipDataset,
    PathResolver,
    load_split,
    parse_coviar,
    parse_hmdb51,
    parse_kinetics_csv,
    parse_list,
    parse_ucf101,
    read_class_index,
)

UCF_COUNTS = {("train", 1): 9537, ("train", 2): 9586, ("train", 3): 9624,
              ("test", 1): 3783, ("test", 2): 3734, ("test", 3): 3696}


@pytest.mark.parametrize("subset,split", sorted(UCF_COUNTS))
def test_ucf101_official_layout(splits_dir, subset, split):
    # The fixture has CRLF lines in classInd/trainlist, LF in testlist, labels appended to the test lists,
    # and the HandStandPushups class spelled as the video files spell it.
    videos = parse_ucf101(splits_dir / "ucf101_official_layout", subset, split=split, root="/videos")
    assert len(videos) == UCF_COUNTS[(subset, split)]
    assert len(videos.classes) == 101
    assert not any("\r" in c for c in videos.classes)
    assert set(videos.labels) == set(range(101))
    for path, label in zip(videos.paths[::97], videos.labels[::97]):
        assert path.startswith("/videos/")
        assert path.split("/")[2].lower() == videos.classes[label].lower()


def test_ucf101_matches_coviar_lists(splits_dir):
    official = parse_ucf101(splits_dir / "ucf101_official_layout", "test", split=1)
    coviar = parse_coviar(splits_dir / "coviar_datalists" / "ucf101_split1_test.txt")
    # the fixture spells one class folder differently (HandStandPushups / HandstandPushups)
    assert [p.lower() for p in official.paths] == [p.lower() for p in coviar.paths]
    assert official.labels == coviar.labels


def _write(path, text, newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def test_ucf101_class_case_and_unlabelled_test_list(tmp_path):
    # The real classInd says HandstandPushups while the lists and files say HandStandPushups.
    _write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n", "\r\n")
    _write(tmp_path / "trainlist01.txt", "HandStandPushups/v_HandStandPushups_g08_c01.avi 2\n", "\r\n")
    _write(tmp_path / "testlist01.txt", "HandStandPushups/v_HandStandPushups_g01_c01.avi\n"
                                        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    assert parse_ucf101(tmp_path, "train").labels == [1]
    test = parse_ucf101(tmp_path, "test")
    assert test.labels == [1, 0]
    assert test.classes == ["ApplyEyeMakeup", "HandstandPushups"]


def test_ucf101_label_contradicting_folder_is_an_error(tmp_path):
    _write(tmp_path / "classInd.txt", "1 A\n2 B\n")
    _write(tmp_path / "trainlist01.txt", "A/v_A_g01_c01.avi 2\n")
    _write(tmp_path / "testlist01.txt", "")
    with pytest.raises(ValueError, match="folder says"):
        parse_ucf101(tmp_path, "train")


def test_ucf101_missing_split_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.splits"):
        parse_ucf101(tmp_path, "train")


def test_path_resolver_forgives_case_and_extension(tmp_path):
    # `gpudecode prepare` writes .mp4; the official lists say .avi and another folder case.
    (tmp_path / "HandstandPushups").mkdir()
    target = tmp_path / "HandstandPushups" / "v_HandStandPushups_g01_c01.mp4"
    target.write_bytes(b"")
    resolver = PathResolver(tmp_path)
    assert resolver.resolve("HandStandPushups/v_HandStandPushups_g01_c01.avi") == str(target)
    assert resolver.resolve("handstandpushups/V_HANDSTANDPUSHUPS_G01_C01.MP4") == str(target)
    missing = resolver.resolve("Nope/v_x.avi")
    assert missing == str(tmp_path / "Nope" / "v_x.avi")  # kept, reported as bad when read


def test_hmdb51_official_splits(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    _write(splits / "wave_test_split1.txt", "a_wave_0.avi 1 \nb_wave_1.avi 2 \nc_wave_2.avi 0 \n", "\r\n")
    _write(splits / "brush_hair_test_split1.txt", "d_brush_hair_0.avi 2 \ne_brush_hair_1.avi 1 \n")
    _write(splits / "wave_test_split2.txt", "a_wave_0.avi 2 \n")
    _write(splits / "brush_hair_test_split2.txt", "d_brush_hair_0.avi 1 \n")
    train = parse_hmdb51(splits, "train", split=1, root="/hmdb")
    test = parse_hmdb51(splits, "test", split=1, root="/hmdb")
    assert train.classes == ["brush_hair", "wave"]
    assert train.paths == ["/hmdb/brush_hair/e_brush_hair_1.avi", "/hmdb/wave/a_wave_0.avi"]
    assert train.labels == [0, 1]
    assert test.paths == ["/hmdb/brush_hair/d_brush_hair_0.avi", "/hmdb/wave/b_wave_1.avi"]
    assert parse_hmdb51(splits, "test", split=2).labels == [1]
    with pytest.raises(FileNotFoundError):
        parse_hmdb51(splits, "train", split=3)


@pytest.mark.parametrize("name,count,classes", [("hmdb51_split1_train", 3570, 51), ("hmdb51_split1_test", 1530, 51),
                                                ("ucf101_split2_train", 9586, 101)])
def test_coviar_lists(splits_dir, name, count, classes):
    videos = parse_coviar(splits_dir / "coviar_datalists" / f"{name}.txt", root="/r")
    assert len(videos) == count and len(videos.classes) == classes
    for path, label in zip(videos.paths[::50], videos.labels[::50]):
        assert path.split("/")[2] == videos.classes[label]


def test_kinetics_csv(tmp_path):
    csv = _write(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\n"
                                         "abseiling,AAAAAAAAAAA,14,24,train\n"
                                         "air drumming,BBBBBBBBBBB,0,10,train\n"
                                         "abseiling,CCCCCCCCCCC,5,15,train\n")
    root = tmp_path / "videos"
    (root / "abseiling").mkdir(parents=True)
    (root / "abseiling" / "AAAAAAAAAAA_000014_000024.mp4").write_bytes(b"")
    (root / "BBBBBBBBBBB.mp4").write_bytes(b"")
    videos = parse_kinetics_csv(csv, root=root)
    assert videos.classes == ["abseiling", "air drumming"]
    assert videos.labels == [0, 1, 0]
    assert videos.paths[0] == str(root / "abseiling" / "AAAAAAAAAAA_000014_000024.mp4")
    assert videos.paths[1] == str(root / "BBBBBBBBBBB.mp4")
    assert videos.paths[2].endswith("CCCCCCCCCCC_000005_000015.mp4")  # missing: reported when read


def test_generic_list_and_load_split(tmp_path):
    _write(tmp_path / "classInd.txt", "1 left\n2 right\n")
    _write(tmp_path / "train.txt", "a/x.mp4 1\nb/y.mp4 0\n")
    _write(tmp_path / "names.txt", "a/x.mp4 right\nb/y.mp4 left\n")
    videos = parse_list(tmp_path / "train.txt", root=tmp_path)
    assert videos.labels == [1, 0] and videos.classes == ["0", "1"]
    assert parse_list(tmp_path / "names.txt").labels == [1, 0]
    data = DataConfig(dataset="list", root=str(tmp_path), train_list="train.txt", test_list="names.txt",
                      class_index="classInd.txt")
    train = load_split(data, "train")
    assert train.classes == ["left", "right"] and train.paths[0] == str(tmp_path / "a" / "x.mp4")
    assert load_split(data, "test").labels == [1, 0]


def test_class_index_must_be_consecutive(tmp_path):
    _write(tmp_path / "c.txt", "1 a\n3 b\n")
    with pytest.raises(ValueError, match="consecutive"):
        read_class_index(tmp_path / "c.txt")


def test_bad_videos_are_returned_not_raised(tmp_path):
    garbage = _write(tmp_path / "garbage.mp4", "not a video at all")
    empty = _write(tmp_path / "empty.avi", "")
    videos = parse_list(_write(tmp_path / "l.txt", "garbage.mp4 0\nempty.avi 0\nmissing.mp4 0\n"), root=tmp_path)
    dataset = ClipDataset(videos, num_segments=2, modalities=("iframe",), mode="test", cache=False)
    report = BadVideoReport()
    for i in range(len(videos)):
        sample, error = dataset.get(i)
        assert sample is None and videos.paths[i] in error
        report.add(videos.paths[i], error)
    report.add(str(garbage), "again")  # a second failure of the same file counts, is listed once
    assert len(report) == 3 and report.count == 4
    text = report.summary()
    assert "3 bad video(s)" in text and str(empty) in text and "missing.mp4" in text
