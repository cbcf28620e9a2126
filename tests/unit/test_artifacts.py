from ccd_dist.pipeline.artifacts import RunDir, fingerprint


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"a": 1}, "x") != fingerprint({"a": 1}, "y")


def test_stage_done_only_after_finish_with_same_fingerprint(tmp_path):
    run = RunDir(tmp_path / "run")
    path = run.begin(0, "teacher")
    (path / "partial.bin").write_bytes(b"x")
    assert not run.is_done(0, "teacher", "fp1")
    run.finish(0, "teacher", "fp1", {"n": 1})
    assert run.is_done(0, "teacher", "fp1")
    assert not run.is_done(0, "teacher", "fp2")
    # a rerun clears leftovers of the interrupted attempt
    path = run.begin(0, "teacher")
    assert list(path.iterdir()) == []
    assert not run.is_done(0, "teacher", "fp1")
