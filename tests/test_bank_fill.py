"""The bank's fill from the untrained network at the start of a run (--bank_init=network) happens only
when a loss reads the bank before it is filled anew: with the paper's instance-recognition warm-up,
not with a supervised warm-up (refilled at the switch) nor with --method=supervised."""
import numpy as np
import pytest

from llp_tf import experiment, resume
from llp_tf.config import TrainConfig
from tests.datasets import write_npz


@pytest.mark.parametrize("settings, filled", [
    (dict(warmup="instance", warmup_epochs=1), True),
    (dict(warmup="supervised", warmup_epochs=1), False),
    (dict(warmup="supervised", warmup_epochs=0), True),  # no switch: the first propagation reads it
    (dict(method="supervised"), False),
    (dict(warmup="supervised", warmup_epochs=1, bank_init="random"), False),
])
def test_start_fills_the_bank_only_when_a_loss_reads_it_first(settings, filled, tmp_path):
    npz = write_npz(tmp_path / "tiny.npz")
    config = TrainConfig(**{**dict(dataset=f"npz:{npz}", workdir=str(tmp_path / "run"), backbone="small_cnn",
                                   batch_size=32, labelled_fraction=0.1, epochs=2, k=5, t=10), **settings})
    run = experiment.Experiment(config.resolved())
    before = run.model.state.bank.numpy()
    assert resume.restore(run) == (0, 0)
    after = run.model.state.bank.numpy()
    assert (not np.array_equal(before, after)) == filled
    if filled:  # the rows are the network's own embeddings of the unaugmented images
        images = next(iter(run.ordered_train_dataset()))[0]
        embeddings = run.model(images, training=False)["embeddings"].numpy()
        np.testing.assert_allclose(after[:len(embeddings)], embeddings, atol=1e-5)
