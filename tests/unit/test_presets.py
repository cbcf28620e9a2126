"""Dataset presets: the sizes of §2.4, the §7.2 schedule per block, and Gowalla's documented departure."""
import pytest

from ccd_dist.ccd.teacher_update import TeacherUpdateConfig
from ccd_dist.config import apply_overrides
from ccd_dist.errors import InputError
from ccd_dist.pipeline.config import (GOWALLA_TEACHER_GRAPH, GOWALLA_TEACHER_REPLAY_LAMBDA,
                                      GOWALLA_TEACHER_VAE_REPLAY, RUN_SH_SCHEDULE, block_schedule, preset_config)


def test_member_and_student_sizes_follow_the_authors_code():
    gowalla, yelp = preset_config("gowalla"), preset_config("yelp")
    members = {name: [(m.kind, m.dim, m.seed) for m in cfg.teacher.specs()] for name, cfg in
               (("gowalla", gowalla), ("yelp", yelp))}
    assert members["gowalla"] == [("vae", 64, 0), ("vae", 64, 2)] + [("bpr", 64, s) for s in range(5)]
    assert members["yelp"] == [("lightgcn", 128, s) for s in range(5)]
    assert {m.layers for m in yelp.teacher.specs()} == {2}
    assert (gowalla.student.kind, gowalla.student.dim) == ("lightgcn", 16)
    assert (yelp.student.kind, yelp.student.dim) == ("lightgcn", 8)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_block_schedule_applies_run_sh_values_of_that_block(k):
    stages = block_schedule(preset_config("yelp"), k)
    assert stages.student.absolute == RUN_SH_SCHEDULE.s_absolute[k - 1]
    assert stages.student.s_samples == RUN_SH_SCHEDULE.s_samples[k - 1]
    assert stages.student.p_weight == RUN_SH_SCHEDULE.p_weight[k - 1]
    assert stages.teacher.absolute == RUN_SH_SCHEDULE.t_absolute[k - 1]
    assert stages.teacher.cl_samples == RUN_SH_SCHEDULE.t_cl_samples[k - 1]


def test_block_past_the_schedule_keeps_the_base_value():
    cfg = preset_config("yelp")
    apply_overrides(cfg, ["teacher_update.s_samples=7", "schedule.t_s_samples=2"])
    assert block_schedule(cfg, 1).teacher.s_samples == 2
    assert block_schedule(cfg, 2).teacher.s_samples == 7


def test_gowalla_teacher_replay_weight_departs_from_the_reference_and_stays_overridable():
    reference = TeacherUpdateConfig().replay_lambda
    assert preset_config("yelp").teacher_update.replay_lambda == reference
    gowalla = preset_config("gowalla")
    assert gowalla.teacher_update.replay_lambda == GOWALLA_TEACHER_REPLAY_LAMBDA != reference
    assert block_schedule(gowalla, 3).teacher.replay_lambda == GOWALLA_TEACHER_REPLAY_LAMBDA
    apply_overrides(gowalla, [f"teacher_update.replay_lambda={reference}"])
    assert block_schedule(gowalla, 1).teacher.replay_lambda == reference


def test_gowalla_vae_members_keep_the_history_of_idle_users():
    assert TeacherUpdateConfig().graph == preset_config("yelp").teacher_update.graph == "block"
    gowalla = preset_config("gowalla")
    assert gowalla.teacher_update.graph == GOWALLA_TEACHER_GRAPH == "cumulative"
    assert block_schedule(gowalla, 2).teacher.graph == "cumulative"


def test_gowalla_vae_members_skip_the_student_side_replay():
    assert TeacherUpdateConfig().vae_replay and preset_config("yelp").teacher_update.vae_replay
    gowalla = preset_config("gowalla")
    assert block_schedule(gowalla, 2).teacher.vae_replay is GOWALLA_TEACHER_VAE_REPLAY is False
    assert block_schedule(gowalla, 2).teacher.replay  # BPR-MF members still replay


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(InputError, match="unknown preset 'movielens'.*synthetic, yelp, gowalla"):
        preset_config("movielens")
