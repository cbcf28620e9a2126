"""`import-lightgcn` on tiny `user item item ...` files."""
import numpy as np
import pytest

from ccd_dist.data import import_lightgcn
from ccd_dist.errors import InputError

TRAIN = "0 0 1 2 3 4\n1 2 3\n2 5\n\n3 1 1 4 0 2 5 6 7 8 9\n"
TEST = "0 5\n1 4 0\n2\n3 3\n"


@pytest.fixture
def files(tmp_path):
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text(TRAIN)
    test.write_text(TEST)
    return train, test


def _pairs(mat):
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
    return set(zip(rows.tolist(), mat.indices.tolist()))


def test_one_block(files):
    stream = import_lightgcn(*files)
    assert len(stream) == 1
    block = stream[0]
    assert (block.n_users, block.n_items) == (4, 10)
    assert block.train.nnz == 5 + 2 + 1 + 9  # user 3 lists item 1 twice
    assert stream.meta["import_report"]["duplicates_dropped"][0]["train"] == 1
    assert _pairs(block.test) == {(0, 5), (1, 4), (1, 0), (3, 3)}
    assert block.valid.nnz == 0


def test_seeded_valid_carve(files):
    plain = import_lightgcn(*files)[0]
    a = import_lightgcn(*files, valid_fraction=0.3, seed=7)[0]
    b = import_lightgcn(*files, valid_fraction=0.3, seed=7)[0]
    assert _pairs(a.valid) == _pairs(b.valid)
    assert _pairs(a.train) | _pairs(a.valid) == _pairs(plain.train)
    assert not _pairs(a.train) & _pairs(a.valid)
    train_per_user = np.diff(a.train.indptr)
    valid_per_user = np.diff(a.valid.indptr)
    # user 2 has one train item: it keeps it; others give max(int(0.3 n), 1)
    assert valid_per_user.tolist() == [1, 1, 0, 2]
    assert (train_per_user >= 1).all()
    seeds = {frozenset(_pairs(import_lightgcn(*files, valid_fraction=0.3, seed=s)[0].valid)) for s in range(6)}
    assert len(seeds) > 1


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("0 1 2\n1 x 3\n", 2, "non-integer token 'x'"),
        ("0 1 2\n\n1 2 -3\n", 3, "negative id '-3'"),
        ("0 1.5\n", 1, "non-integer token '1.5'"),
    ],
)
def test_bad_lines_name_file_and_line(files, content, line, message):
    files[0].write_text(content)
    with pytest.raises(InputError) as err:
        import_lightgcn(*files)
    text = str(err.value)
    assert str(files[0]) in text and f"line {line}" in text and message in text


def test_empty_and_missing_files(files, tmp_path):
    files[1].write_text("\n \n")
    with pytest.raises(InputError, match="empty file"):
        import_lightgcn(*files)
    with pytest.raises(InputError, match="file not found"):
        import_lightgcn(tmp_path / "nope.txt", files[1])
    files[0].write_text("0\n1\n")
    files[1].write_text(TEST)
    with pytest.raises(InputError, match="no interactions"):
        import_lightgcn(*files)


def test_bad_valid_fraction(files):
    with pytest.raises(InputError, match="expected 0 <= F < 1"):
        import_lightgcn(*files, valid_fraction=1.5)
