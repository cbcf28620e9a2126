"""The real data in ../shared/data: every count of its README, through the stats that
`ccd-dist data stats` prints (import -> store -> load -> block_stats)."""
import pytest

from ccd_dist.data import block_stats, import_ccd, import_lightgcn, load_stream, save_stream
from ccd_dist.data.safe_pickle import safe_load
from conftest import shared_path  # tests/conftest.py (pytest puts tests/ on sys.path)

pytestmark = pytest.mark.integration

# ../shared/data/README.md and ccd-algorithm.md §1.2 / §1.3
EXPECTED = {
    "gowalla": {
        "users": [19_668, 21_266, 24_107, 26_840, 29_106, 29_858],
        "items": [39_354, 39_809, 40_381, 40_689, 40_908, 40_988],
        "train": [417_977, 39_612, 79_722, 87_989, 90_369, 61_130],
        "valid": [47_398, 5_065, 11_088, 12_377, 12_970, 8_263],
        "test": [47_409, 5_071, 11_104, 12_431, 12_929, 8_291],
        "test_users": [18_995, 4_517, 9_446, 10_530, 10_800, 7_044],
        "new_users": [1_598, 2_841, 2_733, 2_266, 752],
        "new_items_seen": [349, 534, 300, 217, 80],
    },
    "yelp": {
        "users": [12_248, 13_367, 13_896, 14_399, 14_761, 14_950],
        "items": [10_822, 11_345, 11_634, 11_970, 12_197, 12_261],
        # de-duplicated; the as-stored counts are checked against the import report
        "train": [117_367, 32_691, 19_942, 19_873, 23_321, 21_069],
        "valid": [15_189, 6_892, 4_174, 4_011, 4_690, 3_928],
        "test": [15_197, 6_893, 4_179, 4_013, 4_682, 3_933],
        "test_users": [11_501, 6_532, 4_049, 3_851, 4_460, 3_736],
        "new_users": [1_119, 529, 503, 362, 189],
        "new_items_seen": [490, 249, 312, 221, 64],
    },
}
AS_STORED_YELP = {
    "train": [119_869, 33_032, 20_189, 20_056, 23_567, 21_291],
    "valid": [15_202, 6_893, 4_174, 4_011, 4_691, 3_929],
    "test": [15_206, 6_895, 4_180, 4_014, 4_682, 3_933],
}


@pytest.fixture(scope="module", params=["gowalla", "yelp"])
def ccd(request, tmp_path_factory):
    """(name, stream loaded back from a store, stats rows), imported once per dataset."""
    src = shared_path("ccd", request.param)
    out = save_stream(import_ccd(src), tmp_path_factory.mktemp("stores") / request.param)
    stream = load_stream(out)
    return request.param, stream, block_stats(stream)


def test_totals_and_counts(ccd):
    name, _, rows = ccd
    expected = EXPECTED[name]
    for key in ("users", "items", "train", "valid", "test", "test_users"):
        assert [r[key] for r in rows] == expected[key], key


def test_new_entities(ccd):
    """README's new users are ids allocated (U_k - U_{k-1}); its new items are the
    items of block k beyond every item of earlier blocks (see docs/data.md)."""
    name, _, rows = ccd
    assert [r["new_users"] for r in rows[1:]] == EXPECTED[name]["new_users"]
    assert [r["new_items_seen"] for r in rows[1:]] == EXPECTED[name]["new_items_seen"]


def test_duplicates_and_overlap(ccd):
    name, stream, rows = ccd
    report = stream.meta["import_report"]
    overlap = [r["train_test_overlap"] for r in rows]
    if name == "gowalla":
        assert all(sum(d.values()) == 0 for d in report["duplicates_dropped"])
        assert overlap == [0] * 6 and all(r["train_valid_overlap"] == 0 for r in rows)
        assert [c["train"] for c in report["counts_as_stored"]] == EXPECTED[name]["train"]
        return
    for split, counts in AS_STORED_YELP.items():
        assert [c[split] for c in report["counts_as_stored"]] == counts
        kept_plus_dropped = [r[split] + d[split] for r, d in zip(rows, report["duplicates_dropped"])]
        assert kept_plus_dropped == counts
    assert report["duplicates_dropped"][0]["train"] == 2_502
    assert overlap[0] == 589
    assert all(66 <= x <= 100 for x in overlap[1:])
    assert [o["train_test"] for o in report["overlap"]] == overlap
    assert all(r["train_valid_overlap"] > 0 for r in rows)


def test_every_real_pickle_loads_with_the_allow_list():
    root = shared_path("ccd")
    files = sorted(root.glob("*/*.pickle"))
    assert len(files) == 14
    for path in files:
        obj = safe_load(path)
        assert isinstance(obj, (dict, list))
    assert len(safe_load(root / "gowalla" / "user_D1_D5_only_list.pickle")) == 104
    assert len(safe_load(root / "yelp" / "user_D1_D5_only_list.pickle")) == 282


def test_lightgcn_gowalla(tmp_path):
    root = shared_path("lightgcn-gowalla")
    stream = load_stream(save_stream(import_lightgcn(root / "train.txt", root / "test.txt"), tmp_path / "lg"))
    (row,) = block_stats(stream)
    assert (row["users"], row["items"], row["train"], row["test"]) == (29_858, 40_981, 810_128, 217_242)
    assert row["valid"] == 0
