"""Transfer (paper Table 4): a trained run's backbone, frozen, under a new linear softmax readout trained
on another dataset, scored by top-1 on that dataset's held-out split.

    result = transfer("runs/my_run", "folder:/data/places205", epochs=30, learning_rate=0.01)
    result["top1"], result["random_backbone_top1"]

The backbone's pooled features (its output, where LLP's two heads sit) are computed once for every
image of the target's train and test splits, unaugmented, through the evaluation preprocessing at the
run's image size; colour images are made grey for a grey backbone and grey ones colour for a colour
backbone. The readout standardises each feature with the train split's mean and standard deviation
(an affine map a linear readout could absorb, so that one learning rate suits any backbone) and is
trained with SGD and momentum on every labelled train image. The paper instead trains its readout on
augmented Places205 images (lr 0.01, dropped twice, 500k steps). The same readout on the same
architecture, randomly initialised, is the baseline: what training added beyond the architecture.
No flags here: tools/transfer.py is the command line.
"""
import keras
import numpy as np
import tensorflow as tf

from llp_tf import backbones, data, finished


def match_channels(images, channels):
    """images [B, H, W, 1 or 3] with `channels` channels: RGB -> grey (luma) or grey -> RGB (copies)."""
    have = images.shape[-1]
    if have == channels:
        return images
    if channels == 1:
        return tf.image.rgb_to_grayscale(images)
    return tf.image.grayscale_to_rgb(images)


def feature_extractor(backbone):
    """A tf.function: images [B, H, W, any channels] in [0, 1] -> the frozen backbone's float32 [B, F]."""
    channels = backbone.input_shape[-1]

    @tf.function(reduce_retracing=True)
    def extract(images):
        return tf.cast(backbone(match_channels(images, channels), training=False), tf.float32)

    return extract


def pooled_features(extract, source, split, image_size, batch_size):
    """(features float32 [n, F], labels int64 [n]) of every image of `split` through `extract`."""
    features, labels = [], []
    for images, batch_labels, _ in data.eval_dataset(source, split, batch_size, image_size):
        features.append(extract(images).numpy())
        labels.append(batch_labels.numpy())
    if not labels:
        raise ValueError(f"the {split} split of the target dataset holds no images")
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def train_readout(features, labels, num_classes, epochs, learning_rate, batch_size=256, momentum=0.9,
                  weight_decay=0.0, seed=0) -> keras.Model:
    """A standardise-then-linear softmax readout [n, F] -> logits [n, num_classes], trained by SGD on
    the cross-entropy (+ weight_decay * ||W||^2)."""
    keras.utils.set_random_seed(seed)
    standardise = keras.layers.Normalization()
    standardise.adapt(features)
    regulariser = keras.regularizers.L2(weight_decay) if weight_decay else None
    readout = keras.Sequential([keras.Input([features.shape[1]]), standardise,
                                keras.layers.Dense(num_classes, kernel_regularizer=regulariser)])
    readout.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    readout.fit(features, labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return readout


def readout_top1(backbone, source, image_size, epochs, learning_rate, batch_size, weight_decay, seed):
    """Top-1 on the target's test split of a readout trained on its train split over `backbone`."""
    extract = feature_extractor(backbone)
    train_features, train_labels = pooled_features(extract, source, "train", image_size, batch_size)
    test_features, test_labels = pooled_features(extract, source, "test", image_size, batch_size)
    readout = train_readout(train_features, train_labels, source.num_classes, epochs, learning_rate,
                            batch_size, weight_decay=weight_decay, seed=seed)
    logits = readout.predict(test_features, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == test_labels))


def transfer(workdir, dataset, data_dir=None, checkpoint=None, epochs=30, learning_rate=0.01,
             batch_size=256, weight_decay=0.0, random_baseline=True, seed=0) -> dict:
    """Val top-1 of a linear readout on the frozen backbone of the run in `workdir` (its latest
    checkpoint, or `checkpoint`) for `dataset` (a data.load_source URI), and with random_baseline the
    same on a randomly initialised copy of the architecture. Returns the dict llp-transfer prints."""
    if epochs < 1 or learning_rate <= 0 or batch_size < 1 or weight_decay < 0:
        raise ValueError(f"need epochs >= 1, learning_rate > 0, batch_size >= 1 and weight_decay >= 0; "
                         f"got {epochs}, {learning_rate}, {batch_size} and {weight_decay}")
    target = data.load_source(dataset, data_dir)  # a bad target fails before the run is rebuilt
    config = finished.load_config(workdir)  # names a missing workdir or config.json before the checkpoint
    path = finished.checkpoint_path(workdir, checkpoint)  # resolved once: training may save meanwhile
    model, facts = finished.restore_network(workdir, path)
    settings = dict(image_size=facts.image_size, epochs=epochs, learning_rate=learning_rate,
                    batch_size=batch_size, weight_decay=weight_decay, seed=seed)
    result = {"workdir": str(workdir), "checkpoint": path,
              "epoch": int(model.state.completed_epochs.numpy()), "backbone": config.backbone,
              "dataset": dataset, "num_classes": target.num_classes,
              "num_train": len(target.labels("train")), "num_test": len(target.labels("test")),
              **settings, "top1": readout_top1(model.backbone, target, **settings)}
    if random_baseline:
        keras.utils.set_random_seed(seed)
        fresh = backbones.build_backbone(config.backbone, model.backbone.input_shape[1:],
                                         config.weight_decay, config.width)
        result["random_backbone_top1"] = readout_top1(fresh, target, **settings)
    return result
