"""One behavioural contract for every model (in the style of implicit's RecommenderBaseTestMixin).

A test class sets ``kind`` (and optionally ``dim`` / ``build_kwargs``) and inherits
``ModelTestMixin``; it gets fit / score / grow / save-load / determinism tests on a
tiny seeded interaction matrix with two taste groups, one user with no interaction
and one item nobody touched.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ccd_dist.errors import InputError
from ccd_dist.models import KINDS, Recommender, build_model, load_model

N_USERS, N_ITEMS = 30, 20


def tiny_interactions(seed: int = 0) -> sp.csr_matrix:
    """Users 0-14 pick 4 of items 0-9, users 15-28 pick 4 of items 10-18; user 29 and item 19 are empty."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(N_USERS - 1):
        group = np.arange(0, 10) if u < 15 else np.arange(10, 19)
        items = rng.choice(group, size=4, replace=False)
        rows += [u] * 4
        cols += list(items)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(N_USERS, N_ITEMS))


class ModelTestMixin:
    kind: str = ""
    dim = 8
    build_kwargs: dict = {}
    steps = 60
    lr = 0.05

    # ------------------------------------------------------------------ helpers a class may override

    def make(self, seed: int = 0, train=None) -> Recommender:
        model = build_model(self.kind, N_USERS, N_ITEMS, self.dim, seed=seed, **self.build_kwargs)
        return model.set_interactions(tiny_interactions() if train is None else train)

    def loss(self, model: Recommender, rng: np.random.Generator, step: int) -> torch.Tensor:
        """One training loss: BPR over all train pairs with one uniform non-positive negative each."""
        train = model.interactions
        users = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
        pos = train.indices.astype(np.int64)
        dense = train.toarray() > 0  # tiny test matrix only
        neg = rng.integers(0, train.shape[1], size=len(users))
        for _ in range(50):
            bad = dense[users, neg]
            if not bad.any():
                break
            neg[bad] = rng.integers(0, train.shape[1], size=int(bad.sum()))
        return model.bpr_loss(users, pos, neg, reduction="mean")

    def eval_loss(self, model: Recommender) -> float:
        """A deterministic measure of fit: the BPR loss on a fixed negative sample."""
        with torch.no_grad():
            return float(self.loss(model, np.random.default_rng(123), 0))

    def item_rows(self, model: Recommender) -> torch.Tensor:
        """The per-item parameter rows that ``grow`` extends (width ``model.item_width``)."""
        return model.item_table.detach()

    def user_rows(self, model: Recommender):
        return model.user_table.detach()

    def fit(self, model: Recommender, steps: int | None = None, seed: int = 0) -> Recommender:
        rng = np.random.default_rng(seed)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        model.train()
        for step in range(steps or self.steps):
            opt.zero_grad()
            self.loss(model, rng, step).backward()
            opt.step()
        model.eval()
        return model

    # ------------------------------------------------------------------ the contract

    def test_fit_lowers_loss_and_ranks_train_items_higher(self):
        model = self.make(seed=0)
        before = self.eval_loss(model)
        self.fit(model)
        after = self.eval_loss(model)
        assert after < before
        user, item = model.representations()
        scores = (user @ item.T).numpy()  # 30 x 20: tiny test only
        train = model.interactions.toarray() > 0
        active = train.any(axis=1)
        assert scores[train].mean() > scores[active][~train[active]].mean() + 0.1 * scores.std()

    def test_representations_shapes_and_score_path(self):
        model = self.fit(self.make(seed=1), steps=5)
        user, item = model.representations()
        assert user.dtype == torch.float32 and item.dtype == torch.float32
        assert user.shape[0] == N_USERS and item.shape[0] == N_ITEMS and user.shape[1] == item.shape[1]
        assert not user.requires_grad and not item.requires_grad
        users = np.repeat(np.arange(N_USERS), N_ITEMS)
        items = np.tile(np.arange(N_ITEMS), N_USERS)
        direct = model.score(users, items)
        torch.testing.assert_close(direct, (user[users] * item[items]).sum(1), rtol=1e-5, atol=1e-6)
        assert torch.isfinite(user).all() and torch.isfinite(item).all()  # empty user / item included

    def test_grow_keeps_old_rows_and_adds_given_rows(self):
        model = self.make(seed=2)
        old_items = self.item_rows(model).clone()
        old_users = self.user_rows(model)
        old_users = None if old_users is None else old_users.clone()
        new_items = torch.arange(3 * model.item_width, dtype=torch.float32).view(3, model.item_width) / 100
        init = {"item": new_items}
        if old_users is not None:
            init["user"] = -torch.ones(2, model.dim)
        assert model.grow(N_USERS + 2, N_ITEMS + 3, init=init) is model
        assert (model.n_users, model.n_items) == (N_USERS + 2, N_ITEMS + 3)
        rows = self.item_rows(model)
        assert torch.equal(rows[:N_ITEMS], old_items) and torch.equal(rows[N_ITEMS:], new_items)
        if old_users is not None:
            users = self.user_rows(model)
            assert torch.equal(users[:N_USERS], old_users) and torch.equal(users[N_USERS:], init["user"])
        user, item = model.representations()
        assert user.shape[0] == N_USERS + 2 and item.shape[0] == N_ITEMS + 3
        assert model.interactions.shape == (N_USERS + 2, N_ITEMS + 3)

    def test_grow_normal_init_is_small_and_seeded(self):
        a, b = self.make(seed=3), self.make(seed=3)
        a.grow(N_USERS + 50, N_ITEMS + 100)
        b.grow(N_USERS + 50, N_ITEMS + 100)
        new = self.item_rows(a)[N_ITEMS:]
        assert torch.equal(new, self.item_rows(b)[N_ITEMS:])
        assert 0.005 < float(new.std()) < 0.02 and abs(float(new.mean())) < 0.005
        # the model still trains after growth (the optimiser is rebuilt on the new parameters)
        self.fit(a, steps=3)

    def test_grow_rejects_bad_requests(self):
        model = self.make()
        with pytest.raises(ValueError):
            model.grow(N_USERS - 1, N_ITEMS)
        with pytest.raises(ValueError):
            model.grow(N_USERS, N_ITEMS + 2, init={"item": torch.zeros(3, model.item_width)})
        with pytest.raises(ValueError):
            model.grow(N_USERS, N_ITEMS, init="xavier")

    def test_save_load_round_trip(self, tmp_path):
        model = self.fit(self.make(seed=4), steps=5)
        path = tmp_path / "model.pt"
        model.save(path)
        loaded = load_model(path)
        assert type(loaded) is type(model) and loaded.config() == model.config()
        for a, b in zip(model.representations(), loaded.representations()):
            assert torch.equal(a, b)
        fresh = self.make(seed=99)
        fresh.load_state_dict(model.state_dict())
        for a, b in zip(model.representations(), fresh.representations()):
            assert torch.equal(a, b)
        assert type(model).load(path).config() == model.config()

    def test_load_failures_are_clear_errors(self, tmp_path):
        model = self.make()
        with pytest.raises(InputError, match="no such model file"):
            load_model(tmp_path / "missing.pt")
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a checkpoint")
        with pytest.raises(InputError, match="bad.pt"):
            load_model(bad)
        # weights that do not match the stored config: never a silent random start (B9)
        path = tmp_path / "model.pt"
        model.save(path)
        other = next(cls for kind, cls in KINDS.items() if kind != model.kind)
        with pytest.raises(InputError, match="config.kind"):
            other.load(path)
        payload = torch.load(path, weights_only=True)
        payload["config"]["n_items"] += 1
        torch.save(payload, path)
        with pytest.raises(InputError, match="state_dict"):
            load_model(path)
        with pytest.raises(RuntimeError):
            self.make().grow(N_USERS + 1, N_ITEMS + 1).load_state_dict(model.state_dict())

    def test_same_seed_same_model_and_training(self):
        a, b, c = self.make(seed=5), self.make(seed=5), self.make(seed=6)
        sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)
        self.fit(a, steps=5)
        self.fit(b, steps=5)
        for x, y in zip(a.representations(), b.representations()):
            assert torch.equal(x, y)

    def test_set_interactions_checks_shape(self):
        model = build_model(self.kind, N_USERS, N_ITEMS, self.dim, **self.build_kwargs)
        with pytest.raises(InputError, match="grow"):
            model.set_interactions(sp.csr_matrix((N_USERS + 1, N_ITEMS)))
        with pytest.raises(InputError):
            model.set_interactions(np.zeros((N_USERS, N_ITEMS)))
