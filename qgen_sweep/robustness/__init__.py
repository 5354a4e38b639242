"""Robustness under corrupted inputs (the paper's section 4.3): each finished trial's loss and
accuracy on corrupted test sets, and the gap against its clean training loss.

- params.py   the corruptions and CIFAR-C's parameters per severity (torch-free)
- ops/        the corruptions as batched tensor ops on the device
- sources.py  corrupted test sets behind one interface: released CIFAR-C arrays, ImageNet-C's
              folder layout, or generated on the fly
- schema.py, select.py  the rows and the pending test (torch-free: the driver uses them)
- run.py      the job of `qgen-sweep robustness` for one trial
- report.py   Table 4, accuracy under corruption, paired differences, mCE, Kendall, heatmaps
"""
