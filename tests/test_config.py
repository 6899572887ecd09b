"""TrainConfig on its own: the warm-up spelled out, the learning-rate schedule, one clear line for
each number that cannot work."""
import pytest

from llp_tf.config import DEFAULT_WARMUP_EPOCHS, TrainConfig


def config(**values):
    return TrainConfig(**{"dataset": "npz:x.npz", "workdir": "/tmp/w", "epochs": 10, **values})


@pytest.mark.parametrize("values, warmup, warmup_epochs, instance_epochs", [
    ({}, "instance", DEFAULT_WARMUP_EPOCHS, DEFAULT_WARMUP_EPOCHS),
    ({"instance_epochs": 6}, "instance", 6, 6),  # the earlier name means an instance warm-up
    ({"warmup_epochs": 4}, "instance", 4, 4),
    ({"instance_epochs": 4, "warmup_epochs": 4}, "instance", 4, 4),
    ({"warmup": "supervised", "warmup_epochs": 5}, "supervised", 5, 0),
    ({"method": "supervised", "warmup_epochs": 5}, "instance", 5, 0),  # supervised: every epoch
])
def test_warmup_resolves(values, warmup, warmup_epochs, instance_epochs):
    resolved = config(**values).resolved()
    assert (resolved.warmup, resolved.warmup_epochs, resolved.instance_epochs) == (
        warmup, warmup_epochs, instance_epochs)


@pytest.mark.parametrize("values, message", [
    ({"warmup": "supervised", "instance_epochs": 3}, "--instance_epochs=3 means --warmup=instance"),
    ({"instance_epochs": 3, "warmup_epochs": 4}, "disagree"),
    ({"warmup": "self"}, "--warmup must be one of"),
    ({"warmup_epochs": 10}, "--warmup_epochs=10 leaves no LLP epoch"),
    ({"warmup_epochs": -1}, "--warmup_epochs must be >= 0"),
    ({"learning_rate": -1.0}, "--learning_rate must be positive, got -1.0"),
    ({"learning_rate": 0.0}, "--learning_rate must be positive"),
    ({"image_size": 0}, "--image_size must be a positive number of pixels"),
    ({"image_size": -5}, "--image_size must be a positive number of pixels, got -5"),
    ({"batch_size": 0}, "--batch_size must be >= 1, got 0"),
    ({"momentum": 1.0}, "--momentum must be in"),
    ({"weight_decay": -1e-4}, "--weight_decay must be >= 0"),
    ({"steps_per_epoch": 0}, "--steps_per_epoch must be >= 1"),
    ({"lr_drop_epochs": (5, 3)}, "--lr_drop_epochs must increase"),
    ({"lr_drop_epochs": (10,)}, "--lr_drop_epochs must increase and lie within"),
    ({"lr_drop_epochs": (5,), "lr_values": (0.1,)}, "--lr_values needs one more value"),
    ({"lr_drop_epochs": (5,), "lr_values": (0.1, -0.1)}, "--lr_values must all be positive"),
    ({"consistency_weight": -1.0}, "--consistency_weight must be >= 0"),
    ({"consistency_threshold": 1.5}, "--consistency_threshold must be in [0, 1], got 1.5"),
    ({"consistency_weight": 1.0, "method": "supervised"}, "--consistency_weight needs --method=llp"),
    ({"consistency_weight": 1.0, "augment": False}, "--consistency_weight needs --method=llp and --augment"),
    ({"consistency_warmup": True, "warmup": "supervised", "labelled_per_batch": 8},
     "--consistency_warmup needs --consistency_weight > 0"),
    ({"consistency_warmup": True, "consistency_weight": 1.0, "labelled_per_batch": 8},
     "--consistency_warmup needs --consistency_weight > 0, --warmup=supervised"),
    ({"consistency_warmup": True, "consistency_weight": 1.0, "warmup": "supervised"},
     "and --labelled_per_batch > 0"),
])
def test_settings_that_cannot_work_name_their_flag(values, message):
    with pytest.raises(ValueError, match=None) as raised:
        config(**values).validate()
    assert message in str(raised.value)


@pytest.mark.parametrize("values, expected", [
    ({"learning_rate": 0.1}, ([], [0.1])),
    ({"learning_rate": 0.1, "lr_drop_epochs": (4, 8)}, ([4, 8], [0.1, 0.1 * 0.1, 0.1 * 0.1 * 0.1])),
    ({"lr_drop_epochs": (4, 5, 8), "lr_values": (0.1, 0.01, 0.03, 0.003)},
     ([4, 5, 8], [0.1, 0.01, 0.03, 0.003])),
])
def test_learning_rate_schedule(values, expected):
    drops, rates = config(**values).learning_rates()
    assert drops == expected[0]
    assert rates == pytest.approx(expected[1])


@pytest.mark.parametrize("values, warmup_batches", [
    ({"warmup": "supervised"}, True),
    ({"warmup": "supervised", "consistency_weight": 1.0}, True),
    ({"warmup": "supervised", "consistency_weight": 1.0, "consistency_warmup": True,
      "labelled_per_batch": 8}, False),
])
def test_only_supervised_phases_feed_the_labelled_images_alone(values, warmup_batches):
    """--consistency_warmup mixes the unlabelled images into the supervised warm-up's batches."""
    settings = config(**values)
    settings.validate()
    assert settings.labelled_only("supervised") is warmup_batches
    assert not settings.labelled_only("llp") and not settings.labelled_only("instance")
