"""HistoryWatcher: the driver's per-epoch lines for members that train in actors."""
import json
import time

from ccd_dist.pipeline.progress import HistoryWatcher, describe


def _append(path, text):
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _record(epoch, loss, recall=None):
    rec = {"epoch": epoch, "train_seconds": 2.4, "bpr_loss": loss}
    if recall is not None:
        rec["valid"] = {"recall@20": recall, "ndcg@20": 0.01}
    return json.dumps(rec) + "\n"


def test_describe_shows_losses_recall_and_seconds():
    line = describe("bpr_0", {"epoch": 3, "train_seconds": 12.2, "bpr_loss": 41.5, "replay_loss": 0.25,
                              "valid": {"recall@20": 0.09123}, "lr": 0.001})
    assert line == "  bpr_0 epoch 3: bpr_loss 41.5, replay_loss 0.25, valid recall@20 0.0912 (12s)"


def test_poll_prints_each_new_complete_record_once(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _append(a, _record(1, 9.0))  # already there when the watcher starts: not repeated
    said = []
    watcher = HistoryWatcher({"m_a": a, "m_b": b}, said.append)  # b does not exist yet
    assert watcher.poll() == []
    _append(a, _record(2, 8.0, 0.1))
    _append(b, _record(1, 7.0) + '{"epoch": 2, "bpr_lo')  # a record still being written
    watcher.poll()
    assert said == ["  m_a epoch 2: bpr_loss 8, valid recall@20 0.1000 (2s)", "  m_b epoch 1: bpr_loss 7 (2s)"]
    _append(b, 'ss": 6.5}\nnot json\n')
    watcher.poll()
    assert said[-1] == "  m_b epoch 2: bpr_loss 6.5"
    assert len(said) == 3
    assert watcher.poll() == []


def test_context_polls_in_background_and_once_more_on_exit(tmp_path):
    path = tmp_path / "h.jsonl"
    said = []
    with HistoryWatcher({"m": path}, said.append, period=0.05):
        _append(path, _record(1, 5.0))
        deadline = time.monotonic() + 5
        while not said and time.monotonic() < deadline:
            time.sleep(0.02)
        assert said == ["  m epoch 1: bpr_loss 5 (2s)"]  # seen while the stage still runs
        _append(path, _record(2, 4.0))
    assert said[-1] == "  m epoch 2: bpr_loss 4 (2s)"  # the last poll on exit
    assert len(said) == 2
