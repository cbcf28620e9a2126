"""Epoch time and peak RSS of each model on Gowalla (CPU).

Acceptance target: a LightGCN epoch on the LightGCN-format Gowalla (29,858 users,
40,981 items, 810,128 train pairs; 3 layers, d = 64, batch 2048, one negative per
positive, Adam lr 1e-3) in at most 30 s on a 2-core machine with peak RSS < 3 GB.

Each (dataset, model) runs in its own child process so that its peak RSS is its own.
An epoch = negative sampling for every train pair + one pass over the shuffled pairs
(BPR-MF, LightGCN) or over the shuffled users with interactions (Mult-VAE). For a side
by side ratio, the plain torch sparse-CSR path of LightGCN (``backend="torch"``) is
timed on a few batches in the same run.

    flock /tmp/ccd-heavy.lock python bench/bench_models.py            # full, writes docs/benchmarks.md
    python bench/bench_models.py --quick --no-report                   # small smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CCD_SHARED_DATA", REPO.parent / "shared" / "data"))
LIGHTGCN_TRAIN = DATA / "lightgcn-gowalla" / "train.txt"
CCD_GOWALLA = DATA / "ccd" / "gowalla"
DATASETS = ("lightgcn-gowalla", "ccd-gowalla-d0")
MODELS = ("bpr", "lightgcn", "vae")


def read_lightgcn_train(path: Path):
    """(users, items) int64 arrays from a `user item item ...` file."""
    users, items = [], []
    with open(path, encoding="ascii") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 1:
                row = np.array(parts[1:], dtype=np.int64)
                users.append(np.full(len(row), int(parts[0]), dtype=np.int64))
                items.append(row)
    return np.concatenate(users), np.concatenate(items)


def load_train(dataset: str, quick: bool):
    """The train CSR of the dataset; --quick keeps the first 3,000 users."""
    import scipy.sparse as sp

    if dataset == "lightgcn-gowalla":
        users, items = read_lightgcn_train(LIGHTGCN_TRAIN)
        train = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)),
                              shape=(int(users.max()) + 1, int(items.max()) + 1))
    else:
        from ccd_dist.data import import_ccd

        train = import_ccd(CCD_GOWALLA)[0].train
    if quick:
        train = train[:3000]
        train = train[:, : max(1, int(train.indices.max()) + 1)]
    train = sp.csr_matrix(train, dtype=np.float32)
    train.sum_duplicates()
    train.sort_indices()
    return train


def negatives(train, seed: int) -> np.ndarray:
    """One negative per stored positive: the sampling kernel, else numpy rejection sampling."""
    try:
        from ccd_dist.kernels import sample_negatives

        return np.asarray(sample_negatives(train.indptr, train.indices, train.shape[1], 1, seed))[:, 0]
    except NotImplementedError:
        rng = np.random.default_rng(seed)
        users = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
        keys = users * train.shape[1] + train.indices  # sorted: CSR rows, sorted columns
        neg = rng.integers(0, train.shape[1], size=len(users))
        for _ in range(100):
            k = users * train.shape[1] + neg
            pos = np.searchsorted(keys, k).clip(0, len(keys) - 1)
            bad = keys[pos] == k
            if not bad.any():
                break
            neg[bad] = rng.integers(0, train.shape[1], size=int(bad.sum()))
        return neg


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(dataset: str, kind: str, args) -> dict:
    import torch

    from ccd_dist.models import build_model

    torch.set_num_threads(args.threads)
    train = load_train(dataset, args.quick)
    n_users, n_items = train.shape
    model = build_model(kind.split(":")[0], n_users, n_items, args.dim, layers=args.layers, seed=0,
                        **({"backend": "torch"} if kind.endswith(":torch") else {}))
    t0 = time.perf_counter()
    model.set_interactions(train)
    setup_s = time.perf_counter() - t0
    try:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    users = np.repeat(np.arange(n_users), np.diff(train.indptr))
    items = train.indices.astype(np.int64)
    rng = np.random.default_rng(0)
    max_batches = args.torch_batches if kind.endswith(":torch") else None
    epochs, losses = [], []
    step = 0
    for epoch in range(1 if max_batches else args.epochs):
        t0 = time.perf_counter()
        model.train()
        total, n_batches = 0.0, 0
        if kind == "vae":
            sample_s = 0.0
            order = rng.permutation(np.flatnonzero(np.diff(train.indptr)))
            batches = [order[s:s + args.vae_batch] for s in range(0, len(order), args.vae_batch)]
            for batch in batches:
                opt.zero_grad()
                loss = model.vae_loss(batch, step)
                loss.backward()
                opt.step()
                step += 1
                total += float(loss)
                n_batches += 1
        else:
            neg = negatives(train, seed=epoch)
            sample_s = time.perf_counter() - t0
            order = rng.permutation(len(users))
            for s in range(0, len(order), args.batch):
                if max_batches is not None and n_batches >= max_batches:
                    break
                idx = order[s:s + args.batch]
                opt.zero_grad()
                loss = model.bpr_loss(users[idx], items[idx], neg[idx], reduction="sum")
                loss.backward()
                opt.step()
                total += float(loss)
                n_batches += 1
        seconds = time.perf_counter() - t0
        epochs.append({"seconds": seconds, "sample_s": sample_s, "batches": n_batches})
        losses.append(total / max(n_batches, 1))
    full_batches = (len(users) + args.batch - 1) // args.batch
    t0 = time.perf_counter()
    model.representations()
    repr_s = time.perf_counter() - t0
    best = min(epochs, key=lambda e: e["seconds"])
    per_batch = (best["seconds"] - best["sample_s"]) / max(best["batches"], 1)
    epoch_s = best["seconds"] if not max_batches else best["sample_s"] + per_batch * full_batches
    return {"dataset": dataset, "model": kind, "users": n_users, "items": n_items, "pairs": int(train.nnz),
            "epoch_s": epoch_s, "extrapolated": bool(max_batches), "ms_per_batch": 1000 * per_batch,
            "sample_s": best["sample_s"], "setup_s": setup_s, "repr_s": repr_s, "peak_rss_mb": peak_rss_mb(),
            "loss_first": losses[0], "loss_last": losses[-1], "epochs": len(epochs)}


def child_command(dataset: str, kind: str, args) -> list:
    cmd = [sys.executable, __file__, "--child", dataset, kind, "--epochs", str(args.epochs),
           "--threads", str(args.threads), "--dim", str(args.dim), "--layers", str(args.layers),
           "--batch", str(args.batch), "--vae-batch", str(args.vae_batch), "--lr", str(args.lr),
           "--torch-batches", str(args.torch_batches)]
    return cmd + (["--quick"] if args.quick else [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1, help="epochs per model; the fastest one is reported")
    p.add_argument("--quick", action="store_true", help="first 3,000 users only (smoke run)")
    p.add_argument("--models", default=",".join(MODELS) + ",lightgcn:torch")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--vae-batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--torch-batches", type=int, default=20, help="batches timed for lightgcn:torch")
    p.add_argument("--no-report", action="store_true", help="print only; do not touch docs/benchmarks.md")
    p.add_argument("--child", nargs=2, metavar=("DATASET", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(*args.child, args)))
        return 0
    rows = []
    load_before = os.getloadavg()[0]
    for dataset in args.datasets.split(","):
        if dataset == "lightgcn-gowalla" and not LIGHTGCN_TRAIN.exists():
            print(f"skip {dataset}: {LIGHTGCN_TRAIN} not found")
            continue
        if dataset == "ccd-gowalla-d0":
            try:
                import ccd_dist.data  # noqa: F401
            except ImportError as exc:
                print(f"skip {dataset}: data loader unavailable ({exc})")
                continue
            if not CCD_GOWALLA.exists():
                print(f"skip {dataset}: {CCD_GOWALLA} not found")
                continue
        for kind in args.models.split(","):
            if kind == "lightgcn:torch" and dataset != "lightgcn-gowalla":
                continue
            out = subprocess.run(child_command(dataset, kind, args), capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return out.returncode
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row))
    if not rows:
        return 1
    table_rows = []
    lgn = {r["dataset"]: r["epoch_s"] for r in rows if r["model"] == "lightgcn"}
    for r in rows:
        note = ""
        if r["model"] == "lightgcn:torch":
            ratio = r["epoch_s"] / lgn[r["dataset"]]
            note = f"extrapolated from {args.torch_batches} batches; {ratio:.1f}x the kernel path"
        table_rows.append({
            "dataset": r["dataset"], "model": r["model"], "users x items": f"{r['users']:,} x {r['items']:,}",
            "train pairs": f"{r['pairs']:,}", "epoch (s)": f"{r['epoch_s']:.1f}",
            "ms / batch": f"{r['ms_per_batch']:.1f}", "sampling (s)": f"{r['sample_s']:.2f}",
            "representations (s)": f"{r['repr_s']:.2f}", "peak RSS (MB)": f"{r['peak_rss_mb']:.0f}",
            "mean batch loss": f"{r['loss_last']:.4g}", "note": note})
    from bench._report import table, write_section

    body = (
        f"d = {args.dim}, LightGCN {args.layers} layers, batch {args.batch} (VAE {args.vae_batch} users), "
        f"1 negative per positive, Adam lr {args.lr}, {args.threads} threads, best of {args.epochs} epoch(s)"
        f"{' (QUICK: first 3,000 users)' if args.quick else ''}. Each model in its own process; peak RSS is "
        "that process's maximum resident set. Epoch = negative sampling + one pass over the shuffled pairs "
        "(users for the VAE). Target: LightGCN on lightgcn-gowalla <= 30 s/epoch, peak RSS < 3 GB "
        "(the LightGCN authors' code: ~145 s/epoch on this machine class). "
        f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run "
        "(other processes on the machine slow every figure down).\n\n" + table(table_rows)
    )
    print(body)
    if not args.no_report:
        command = "flock /tmp/ccd-heavy.lock python bench/bench_models.py " + " ".join(argv or sys.argv[1:])
        write_section("models", "Models: epoch time and peak RSS", command.strip(), body)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
