"""The allow-list unpickler: loads what the CCD files need, refuses everything else."""
import collections
import os
import pickle

import numpy as np
import pytest

from ccd_dist.data.safe_pickle import safe_load, safe_loads
from ccd_dist.errors import InputError


class _RunsShell:
    """Unpickling this with a naive loader would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_loads_the_ccd_structures():
    train = collections.defaultdict(list)
    train[3] = [1, 2, 2]
    train[7] = []
    obj = {
        "train_dict": train,
        "item_list": [1, 2],
        "num_base_block_users": np.int64(12248),
        "num_base_block_items": np.int32(10822),
        "n": 5,
    }
    for protocol in (4, 5):  # the CCD files are protocol 5
        out = safe_loads(pickle.dumps(obj, protocol=protocol))
        assert isinstance(out["train_dict"], collections.defaultdict)
        assert out["train_dict"] == {3: [1, 2, 2], 7: []}
        assert out["train_dict"].default_factory is list
        assert out["num_base_block_users"] == 12248 and out["num_base_block_users"].dtype == np.int64
        assert out["num_base_block_items"].dtype == np.int32


def test_shell_command_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "TASK_0.pickle"
    path.write_bytes(pickle.dumps({"train_dict": _RunsShell(marker)}))
    with pytest.raises(InputError) as err:
        safe_load(path)
    message = str(err.value)
    assert str(path) in message
    assert "system" in message and "refused" in message
    assert not marker.exists()


def test_eval_is_refused(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(_CallsEval()))
    with pytest.raises(InputError, match=r"refused to unpickle builtins\.eval"):
        safe_load(path)


def test_object_dtype_is_refused():
    # numpy.dtype itself is allowed, but only for plain numeric dtypes.
    with pytest.raises(InputError, match="not a plain numeric dtype"):
        safe_loads(pickle.dumps(np.dtype("O")))


def test_other_numpy_callables_are_refused():
    with pytest.raises(InputError, match="refused to unpickle numpy"):
        safe_loads(pickle.dumps(np.arange(3)))


def test_truncated_pickle_names_the_file(tmp_path):
    data = pickle.dumps({"train_dict": {i: list(range(5)) for i in range(50)}})
    path = tmp_path / "TASK_3.pickle"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as err:
        safe_load(path)
    assert str(path) in str(err.value)


def test_corrupt_pickle_names_the_file(tmp_path):
    path = tmp_path / "junk.pickle"
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(InputError) as err:
        safe_load(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        safe_load(tmp_path / "absent.pickle")
