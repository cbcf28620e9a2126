"""Mult-VAE user autoencoder (§2.3).

encoder Linear(n_items -> d) + tanh, then w_mean / w_logstd Linear(d -> d), decoder
Linear(d -> n_items); Xavier-normal weights and N(0, 1) biases as in the reference.
Input: the user's L2-normalised 0/1 interaction row (from ``set_interactions``), kept
sparse: the encoder is a sparse x dense product and the reconstruction term gathers
log-probabilities at the row's nonzeros, so only the decoder output [batch, n_items]
is dense. Loss, averaged over the batch:
  -sum_i log softmax(logits)_i * x_i  +  beta * KL(N(mu, sigma^2) || N(0, 1)),
with beta = min(0.2, step / 200000).

Deliberate departures from the authors' code (bug B14):
- training noise is Gaussian N(0, 1) (the reference uses uniform [0, 1) noise);
- evaluation uses the encoder mean, no noise (the reference samples at evaluation
  too, so its scores are random);
- the KL includes its constant -1 term, so it is a true KL >= 0 (same gradients).

Representations: user u -> [mu(x_u), 1], item i -> [decoder.weight[i], decoder.bias[i]],
so <user, item> is the decoder logit, which ranks items exactly like the softmax.
Users without interactions get mu of a zero row: well defined.

Item width: the reference sizes the VAE with the global max_item (all future items,
B14). Here the item dimension grows with ``grow`` like the other models (new encoder
columns and decoder rows), so no future information leaks into block k. Users are
not parameters: ``grow`` only changes ``n_users``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Recommender, as_index

BETA_CAP = 0.2
BETA_STEPS = 200_000
REPR_CHUNK = 4096  # users encoded at once in representations()


def kl_weight(step: int) -> float:
    """beta = min(0.2, step / 200000) (§2.3)."""
    return min(BETA_CAP, step / BETA_STEPS)


class MultVAE(Recommender):
    kind = "vae"
    has_user_rows = False

    def __init__(self, n_users: int, n_items: int, dim: int = 64, seed: int = 0):
        super().__init__(n_users, n_items, dim, seed)
        self._noise = torch.Generator().manual_seed(self.seed + 1)
        self.encoder = self._linear(n_items, dim)
        self.w_mean = self._linear(dim, dim)
        self.w_logstd = self._linear(dim, dim)
        self.decoder = self._linear(dim, n_items)

    def _linear(self, n_in: int, n_out: int) -> nn.Linear:
        layer = nn.utils.skip_init(nn.Linear, n_in, n_out)
        with torch.no_grad():
            nn.init.xavier_normal_(layer.weight, generator=self._gen)
            layer.bias.normal_(0.0, 1.0, generator=self._gen)
        return layer

    @property
    def item_width(self) -> int:
        return self.dim + 1

    # ------------------------------------------------------------------ inputs

    def _inputs(self, users: np.ndarray):
        """The users' L2-normalised 0/1 rows as (sparse COO [B, n_items], row ids, item ids, values).

        Users without interactions (or without interactions set) have empty rows.
        """
        dev = self.decoder.weight.device
        if self._train is None or not len(users):
            rows = cols = np.zeros(0, dtype=np.int64)
            vals = np.zeros(0, dtype=np.float32)
        else:
            indptr, indices = self._train.indptr, self._train.indices
            counts = indptr[users + 1] - indptr[users]
            starts = np.repeat(indptr[users] - (np.cumsum(counts) - counts), counts)
            cols = indices[starts + np.arange(counts.sum())].astype(np.int64)
            rows = np.repeat(np.arange(len(users)), counts)
            vals = (1.0 / np.sqrt(np.maximum(counts, 1))).astype(np.float32)[rows]
        rows_t, cols_t = torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)
        vals_t = torch.from_numpy(vals).to(dev)
        x = torch.sparse_coo_tensor(torch.stack([rows_t, cols_t]), vals_t, (len(users), self.n_items),
                                    is_coalesced=True, check_invariants=False)  # canonical CSR rows
        return x, rows_t, cols_t, vals_t

    def encode(self, x: torch.Tensor):
        """(mu, log sigma) of sparse input rows ``x``: tanh(x W_enc^T + b) -> two Linear(d, d)."""
        h = torch.tanh(torch.sparse.mm(x, self.encoder.weight.t()) + self.encoder.bias)
        return self.w_mean(h), self.w_logstd(h)

    # ------------------------------------------------------------------ interface

    def vae_loss(self, user_batch, step: int) -> torch.Tensor:
        x, rows, cols, vals = self._inputs(as_index(user_batch, self.n_users, "user_batch"))
        mu, logstd = self.encode(x)
        noise = torch.randn(mu.shape, generator=self._noise).to(mu.device)
        z = mu + noise * torch.exp(logstd)
        logp = torch.log_softmax(self.decoder(z), dim=1)
        # -sum_i log p_i * x_i over the nonzeros of x only (x is sparse)
        recon = torch.zeros(len(mu), device=mu.device).index_add(0, rows, -logp[rows, cols] * vals)
        kl = 0.5 * (mu.pow(2) + torch.exp(2 * logstd) - 2 * logstd - 1).sum(1)
        return (recon + kl_weight(step) * kl).mean()

    def user_means(self, users) -> torch.Tensor:
        """Encoder means mu(x_u) (evaluation: no noise)."""
        users = as_index(users, self.n_users, "users")
        with torch.no_grad():
            parts = [self.encode(self._inputs(users[s:s + REPR_CHUNK])[0])[0]
                     for s in range(0, len(users), REPR_CHUNK)]
        return torch.cat(parts) if parts else torch.zeros(0, self.dim, device=self.decoder.weight.device)

    def representations(self):
        mu = self.user_means(np.arange(self.n_users))
        user = torch.cat([mu, torch.ones(len(mu), 1, device=mu.device)], dim=1)
        with torch.no_grad():
            item = torch.cat([self.decoder.weight, self.decoder.bias[:, None]], dim=1).detach().clone()
        return user.contiguous(), item.contiguous()

    def score(self, users, items):
        """Decoder logits of (user, item) pairs from the evaluation forward pass."""
        users, items = as_index(users, self.n_users, "users"), as_index(items, self.n_items, "items")
        with torch.no_grad():
            logits = self.decoder(self.encode(self._inputs(users)[0])[0])
            return logits[torch.arange(len(users)), torch.from_numpy(items).to(logits.device)]

    def softmax(self, users) -> torch.Tensor:
        """The reference's score rows: softmax over all items [len(users), n_items] (evaluation mode)."""
        users = as_index(users, self.n_users, "users")
        with torch.no_grad():
            return torch.softmax(self.decoder(self.encode(self._inputs(users)[0])[0]), dim=1)

    def _grow(self, n_users, n_items, user_rows, item_rows):
        new = n_items - self.n_items
        dev = self.decoder.weight.device
        with torch.no_grad():
            enc_w = torch.cat([self.encoder.weight, self._normal(self.dim, new).to(dev)], dim=1)
            dec_w = torch.cat([self.decoder.weight, item_rows[:, : self.dim].to(dev)])
            dec_b = torch.cat([self.decoder.bias, item_rows[:, self.dim].to(dev)])
            encoder = nn.utils.skip_init(nn.Linear, n_items, self.dim, device=dev)
            decoder = nn.utils.skip_init(nn.Linear, self.dim, n_items, device=dev)
            encoder.weight.copy_(enc_w)
            encoder.bias.copy_(self.encoder.bias)
            decoder.weight.copy_(dec_w)
            decoder.bias.copy_(dec_b)
        self.encoder, self.decoder = encoder, decoder
