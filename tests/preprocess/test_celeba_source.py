import zipfile

import pytest
from conftest import shared_celeba

from preprocess.celeba import SPLIT_CODES, CelebAError, ImageSource, read_partition, sample_key


def test_the_samples_partition_file_is_read_whole():
    path = shared_celeba() / "list_eval_partition.txt"
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    expected = {split: [n for n, code in lines if code == c] for c, split in SPLIT_CODES.items()}
    assert read_partition(path) == expected


@pytest.mark.real_celeba
def test_official_partition_file_has_celebas_split():
    splits = read_partition(shared_celeba() / "list_eval_partition.txt")
    # The official split sizes of CelebA; the file has no newline after its last line.
    assert {k: len(v) for k, v in splits.items()} == {"train": 162770, "val": 19867, "test": 19962}
    assert splits["train"][0] == "000001.jpg"
    assert splits["test"][0] == "182638.jpg" and splits["test"][-1] == "202599.jpg"


@pytest.mark.parametrize(
    "text, message",
    [
        ("000001.jpg 0\n000002.jpg 7\n", r":2: expected"),
        ("000001.jpg\n", r":1: expected"),
        ("000001.jpg 0\n000001.jpg 1\n", "listed twice"),
        ("\n\n", "lists no images"),
    ],
)
def test_malformed_partition_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "list_eval_partition.txt"
    path.write_text(text)
    with pytest.raises(CelebAError, match=message) as info:
        read_partition(path)
    assert str(path) in str(info.value)


def test_crlf_partition_is_accepted(tmp_path):
    path = tmp_path / "list_eval_partition.txt"
    path.write_bytes(b"000001.jpg 0\r\n000002.jpg 2")
    assert read_partition(path) == {"train": ["000001.jpg"], "val": [], "test": ["000002.jpg"]}


def test_missing_root_and_images_are_clear_errors(tmp_path):
    with pytest.raises(CelebAError, match="CelebA root not found"):
        ImageSource.open(tmp_path / "nope")
    with pytest.raises(CelebAError, match=r"neither img_align_celeba/ nor img_align_celeba\.zip"):
        ImageSource.open(tmp_path)
    (tmp_path / "img_align_celeba.zip").write_bytes(b"not a zip")
    with pytest.raises(CelebAError, match="not a zip file"):
        ImageSource.open(tmp_path)


def test_zip_source_reads_the_same_bytes_as_the_folder(tmp_path):
    folder = shared_celeba() / "img_align_celeba"
    names = sorted(p.name for p in folder.iterdir())[:5]
    with zipfile.ZipFile(tmp_path / "img_align_celeba.zip", "w") as archive:
        archive.writestr("img_align_celeba/", "")
        for name in names:
            archive.write(folder / name, f"img_align_celeba/{name}")
    source = ImageSource.open(tmp_path)
    assert source.is_zip
    assert source.names() == set(names)
    for name in names:
        assert source.read(name) == (folder / name).read_bytes()
    assert source.display_name(names[0]) == f"img_align_celeba.zip:img_align_celeba/{names[0]}"


def test_sample_keys_have_no_dots():
    assert sample_key("000001.jpg") == "000001"
    with pytest.raises(CelebAError, match="exactly one dot"):
        sample_key("000001.hr.jpg")
