"""Train TinyNet on two moons and checkpoint to $ENVBUILDER_ARTIFACTS (default ./artifacts).

Logs one line per epoch, `epoch 3/10 loss=0.41 val_loss=0.44 acc=0.93 lr=1e-3`, which envbuilder
parses into metrics. SIGTERM (`envbuilder runs stop`, `docker stop`) lets the current step finish, then
saves a checkpoint that `--resume` continues from.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from tinynet.data import two_moons
from tinynet.model import TinyNet

EXIT_TERMINATED = 128 + signal.SIGTERM


class StopFlag:
    """Set by SIGTERM; checked between steps so a step is never cut in half."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True


def artifacts_dir() -> Path:
    path = Path(os.environ.get("ENVBUILDER_ARTIFACTS", "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, step: int, val_loss: float | None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "step": step, "val_loss": val_loss}, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def evaluate(model, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(dim=1) == y).float().mean().item()
    model.train()
    return loss, acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (need /dev/shm)")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--step-delay", type=float, default=0.0, help="seconds to sleep per step (demos of stop/resume)")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue from this checkpoint")
    args = parser.parse_args(argv)

    stop = StopFlag()
    torch.manual_seed(0)
    x, y = two_moons(args.samples, seed=0)
    split = int(0.8 * len(x))
    train_set = TensorDataset(torch.from_numpy(x[:split]), torch.from_numpy(y[:split]))
    x_val, y_val = torch.from_numpy(x[split:]), torch.from_numpy(y[split:])
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        generator=torch.Generator().manual_seed(0))

    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    start_epoch, step = 0, 0
    if args.resume:
        state = torch.load(args.resume, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"], state["step"]
        print(f"resumed from {args.resume} at epoch {start_epoch}/{args.epochs} step={step}", flush=True)

    out = artifacts_dir()
    checkpoint = out / "checkpoint.pt"
    print(f"training on {len(train_set)} points, {args.workers} DataLoader workers, torch {torch.__version__}", flush=True)
    val_loss = None
    started = time.monotonic()
    for epoch in range(start_epoch, args.epochs):
        total, batches = 0.0, 0
        worker_pids: set[int] = set()
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches, step = total + loss.item(), batches + 1, step + 1
            if args.step_delay:
                time.sleep(args.step_delay)
            if stop.requested:
                # the epoch is unfinished: resuming replays it from its start with the weights so far
                save_checkpoint(checkpoint, model, optimizer, scheduler, epoch, step, val_loss)
                print(f"SIGTERM: stopped at epoch {epoch + 1}/{args.epochs} step={step}; "
                      f"checkpoint saved to {checkpoint}", flush=True)
                return EXIT_TERMINATED
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_loss, acc = evaluate(model, x_val, y_val)
        print(f"epoch {epoch + 1}/{args.epochs} loss={total / batches:.4f} val_loss={val_loss:.4f} "
              f"acc={acc:.4f} lr={lr:.3g}", flush=True)
        save_checkpoint(checkpoint, model, optimizer, scheduler, epoch + 1, step, val_loss)
    print(f"done in {time.monotonic() - started:.1f}s; checkpoint saved to {checkpoint}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
