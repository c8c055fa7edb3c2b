"""Demo datasets, a small MLP and the training comparison behind the ``clrjax`` command line.

Nothing in the library core imports this subpackage. Datasets are generated or
loaded locally, never downloaded: scikit-learn's bundled digits and ``mnist1d``
generated with ``make_dataset(get_dataset_args())`` (the ``examples`` extra
installs both).
"""

from clrjax.demo._cli import main
from clrjax.demo._comparison import (
    KINDS,
    Arm,
    TrainDemoResult,
    demo_problem,
    epochs_to_reach,
    format_table,
    make_arms,
    plot_results,
    run_train_demo,
    suggest_lrs,
)
from clrjax.demo._data import (
    DATASETS,
    Dataset,
    init_mlp,
    load_dataset,
    load_digits,
    load_mnist1d,
    mlp_accuracy,
    mlp_apply,
    mlp_loss,
)

__all__ = [
    "DATASETS",
    "KINDS",
    "Arm",
    "Dataset",
    "TrainDemoResult",
    "demo_problem",
    "epochs_to_reach",
    "format_table",
    "init_mlp",
    "load_dataset",
    "load_digits",
    "load_mnist1d",
    "main",
    "make_arms",
    "mlp_accuracy",
    "mlp_apply",
    "mlp_loss",
    "plot_results",
    "run_train_demo",
    "suggest_lrs",
]
