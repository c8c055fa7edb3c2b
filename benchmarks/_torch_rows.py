"""The torch-lr-finder baseline: ``LRFinder.range_test`` once per lane (NumPy and torch only)."""

from __future__ import annotations

import contextlib
import io

from _data import END_LR, MOMENTUM, START_LR, Data


def torch_available() -> bool:
    """Whether ``torch`` and ``torch_lr_finder`` import."""
    try:
        import torch  # noqa: F401
        import torch_lr_finder  # noqa: F401
    except ImportError:
        return False
    return True


def torch_lr_finder_runs(data: Data, wds, num_steps: int, batch_size: int, threads: int):
    """``torch-lr-finder/<threads>t``: ``LRFinder.range_test`` once per weight decay.

    Same model shapes, loss and optimizer as the JAX rows, on a shuffled
    ``DataLoader`` over the same tensors, ``diverge_th=inf`` so every run does
    all steps; ``torch.set_num_threads(threads)`` on CPU. On a machine with CUDA
    the runs use the GPU.
    """
    import torch
    from torch_lr_finder import LRFinder

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dataset = torch.utils.data.TensorDataset(
        torch.from_numpy(data.x), torch.from_numpy(data.y).long()
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True
    )

    def run():
        torch.set_num_threads(threads)  # per call: the rows take turns
        for wd in wds:
            model = data.torch_model()
            opt = torch.optim.SGD(
                model.parameters(), lr=START_LR, momentum=MOMENTUM, weight_decay=float(wd)
            )
            finder = LRFinder(model, opt, torch.nn.CrossEntropyLoss(), device=device)
            with contextlib.redirect_stdout(io.StringIO()):
                finder.range_test(
                    loader,
                    end_lr=END_LR,
                    num_iter=num_steps,
                    step_mode="exp",
                    diverge_th=float("inf"),
                )
            assert len(finder.history["loss"]) == num_steps

    return run
