"""The LLP network as a Keras model: backbone, embedding and classifier heads, and a train_step that
runs instance recognition, LLP or plain supervised training for one replica.

The per-example state (memory bank, current labels, confidences, log-density) lives in `LLPState`, a
`tf.Module` of `tf.Variable`s outside the Keras weights, so a serving export never carries it and a
checkpoint holds it explicitly.
"""
import keras
import numpy as np
import tensorflow as tf

from llp_tf import bank as bank_lib
from llp_tf import losses

PHASES = ("instance", "llp", "supervised")


class LLPState(tf.Module):
    """Per-example training state, one row per training example (bank row = dataset index).

    Every variable uses aggregation NONE: under MirroredStrategy each replica holds a full copy, and
    the train step keeps the copies identical by applying the whole global batch's update on each.

    `labels` are the current labels: the true label of a labelled row, the pseudo-label of the
    others (-1 until the first propagation). The true labels of unlabelled rows are never stored
    here. (The checkpointed variable names stay as they are, so checkpoints read back.)
    """

    def __init__(self, is_labelled, true_labels, embedding_dim, seed=0):
        super().__init__(name="llp_state")
        is_labelled = np.asarray(is_labelled, bool)
        num_examples = len(is_labelled)
        # Unlabelled rows hold -1 until the first propagation gives them a pseudo-label.
        current = np.where(is_labelled, np.asarray(true_labels, np.int64), -1)
        make = lambda value, name: tf.Variable(  # noqa: E731
            value, trainable=False, name=name, aggregation=tf.VariableAggregation.NONE)
        self.bank = make(bank_lib.random_unit_rows(num_examples, embedding_dim, seed), "bank")
        self.labels = make(current, "labels")
        self.confidences = make(is_labelled.astype(np.float32), "confidences")
        self.is_labelled = make(is_labelled, "is_labelled")
        self.log_density = make(np.zeros(int(is_labelled.sum()), np.float32), "log_density")
        self.completed_epochs = make(np.int64(0), "completed_epochs")

    def needs_propagation(self):
        """True until the first propagation has labelled every unlabelled row."""
        return bool(np.any(self.labels.numpy() < 0))

    @property
    def num_examples(self):
        return int(self.bank.shape[0])


class LLPModel(keras.Model):
    """f(x) = (L2-normalised embedding, class logits) with LLP's training step.

    phase "instance": every example is its own class (A = {x}), no category loss.
    phase "llp": c * (L_C + L_A) against the current labels (Eq. 4).
    phase "supervised": cross-entropy on the true labels of the batch (the baseline; feed it
    labelled examples only). The bank is updated in every phase, so kNN evaluation works for all.

    consistency_weight > 0 (a departure): batches carry a fourth element, a weakly augmented view of
    each image, and in phase "llp" every unlabelled example adds consistency_weight times
    losses.consistency_loss (its weak view's confident prediction as the target of its training view).
    consistency_warmup (a departure, with consistency_weight > 0): phase "supervised" gets mixed
    batches too; its labelled rows' cross-entropy is multiplied by labelled_weight (batch size over
    labelled rows per batch, so that they weigh as a batch of labelled examples) and its unlabelled
    rows add the consistency term (FixMatch).
    """

    def __init__(self, backbone, num_classes, state: LLPState, tau=0.07, bank_momentum=0.5,
                 use_confidence=True, use_category_loss=True, weight_decay=1e-4,
                 warmup_category_loss=False, confidence_threshold=0.0, consistency_weight=0.0,
                 consistency_threshold=0.95, consistency_warmup=False, labelled_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
        self.backbone = backbone
        # Heads compute in float32 under mixed precision: the bank and logsumexp need it.
        self.embedding_head = keras.layers.Dense(
            state.bank.shape[1], kernel_regularizer=regularizer, dtype="float32", name="embedding")
        self.classifier = keras.layers.Dense(
            num_classes, kernel_regularizer=regularizer, dtype="float32", name="classifier")
        self.state = state
        self.num_classes = num_classes
        self.tau = tau
        self.bank_momentum = bank_momentum
        self.use_confidence = use_confidence
        self.use_category_loss = use_category_loss
        self.warmup_category_loss = warmup_category_loss
        self.confidence_threshold = confidence_threshold
        self.consistency_weight = consistency_weight
        self.consistency_threshold = consistency_threshold
        self.consistency_warmup = consistency_warmup
        self.labelled_weight = labelled_weight
        self._phase = "instance"
        tracked = ["loss", "aggregation_loss", "category_loss", "weight_decay_loss"]
        if consistency_weight:
            tracked += ["consistency_loss", "consistency_mask"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in tracked}
        self.trackers["top1"] = keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1")
        self.trackers["top5"] = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")

    @property
    def phase(self):
        return self._phase

    @phase.setter
    def phase(self, value):
        if value not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {value!r}")
        if value != self._phase:
            self._phase = value
            self.train_function = None  # retrace: the phase is a Python branch of train_step

    def call(self, images, training=False):
        return self.heads(self.backbone(images, training=training))

    def heads(self, features):
        """{"embeddings": L2-normalised embedding, "logits": class logits} of pooled backbone features."""
        embeddings = tf.math.l2_normalize(self.embedding_head(features), axis=1)
        return {"embeddings": embeddings, "logits": self.classifier(features)}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def per_example_loss(self, outputs, true_labels, indices, bank):
        """(per-example loss [B], aggregation part [B], category part [B]) of the current phase,
        without the consistency departure (consistency_term)."""
        embeddings, logits = outputs["embeddings"], outputs["logits"]
        zeros = tf.zeros_like(embeddings[:, 0])
        if self._phase == "instance":
            aggregation = losses.instance_loss(embeddings, bank, indices, self.tau)
            if not self.warmup_category_loss:
                return aggregation, aggregation, zeros
            # Departure: the classifier also learns from the batch's labelled examples (only they
            # have a label before the first propagation).
            is_labelled = tf.gather(self.state.is_labelled, indices)
            labels = tf.where(is_labelled, tf.gather(self.state.labels, indices), 0)
            category = losses.category_loss(labels, logits) * tf.cast(is_labelled, logits.dtype)
            return aggregation + category, aggregation, category
        if self._phase == "supervised":
            if not self.consistency_warmup:
                category = losses.category_loss(true_labels, logits)
                return category, zeros, category
            # Departure: mixed batches; the unlabelled rows' true labels are never read.
            is_labelled = tf.gather(self.state.is_labelled, indices)
            labels = tf.where(is_labelled, tf.gather(self.state.labels, indices), 0)
            category = (losses.category_loss(labels, logits) * tf.cast(is_labelled, logits.dtype)
                        * self.labelled_weight)
            return category, zeros, category
        labels = tf.gather(self.state.labels, indices)
        confidences = tf.gather(self.state.confidences, indices)
        if self.confidence_threshold:  # departure: drop the least confident pseudo-labels
            confidences = tf.where(confidences >= self.confidence_threshold, confidences, 0.0)
        aggregation = losses.aggregation_loss(embeddings, bank, self.state.labels, labels, self.tau)
        category = losses.category_loss(labels, logits)
        total = losses.llp_loss(aggregation, category, confidences,
                                self.use_confidence, self.use_category_loss)
        return total, aggregation, category

    def consistency_term(self, logits, weak_logits, indices):
        """(consistency_weight x losses.consistency_loss, 0 on labelled rows [B]; the loss's mask [B];
        1 on the unlabelled rows [B])."""
        loss, mask = losses.consistency_loss(logits, weak_logits, self.consistency_threshold)
        unlabelled = tf.cast(~tf.gather(self.state.is_labelled, indices), loss.dtype)
        return self.consistency_weight * loss * unlabelled, mask, unlabelled

    def uses_weak_view(self, data):
        """True when this step adds the consistency term: weight > 0 and phase llp, or phase supervised
        with consistency_warmup (whose batches must then carry the weak views)."""
        if not self.consistency_weight:
            return False
        if self._phase != "llp" and not (self._phase == "supervised" and self.consistency_warmup):
            return False
        if len(data) < 4:
            raise ValueError("consistency_weight > 0 needs batches that carry weak views "
                             "(data.train_dataset(..., weak_views=True))")
        return True

    def phase_variables(self):
        """The variables this phase trains: a head no loss of the phase reaches is left out (the
        classifier during instance recognition, the embedding head in supervised training), rather
        than updated by its weight penalty alone."""
        if self._phase == "instance" and not self.warmup_category_loss:
            frozen = self.classifier
        elif self._phase == "supervised":
            frozen = self.embedding_head
        else:
            return self.trainable_variables
        left_out = {id(v) for v in frozen.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in left_out]

    def target_labels(self, true_labels, indices):
        """The labels the classifier is trained towards in this phase (for the train accuracy)."""
        if self._phase == "llp":
            return tf.gather(self.state.labels, indices)
        return true_labels

    def train_step(self, data):
        images, true_labels, indices = data[:3]
        weak_logits = None
        if self.uses_weak_view(data):  # the target only: no gradient, batch-norm in inference mode
            weak_logits = tf.stop_gradient(self(data[3], training=False)["logits"])
        # The loss reads the bank before this step's update (METHOD.md, memory bank).
        bank = bank_lib.read_whole(self.state.bank, without_copy=not self.jit_compile)
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            per_example, aggregation, category = self.per_example_loss(
                outputs, true_labels, indices, bank)
            if weak_logits is not None:
                consistency, consistency_mask, unlabelled = self.consistency_term(
                    outputs["logits"], weak_logits, indices)
                per_example = per_example + consistency
            # Gradients are summed over replicas: divide by the global batch once, here.
            data_loss = tf.nn.compute_average_loss(per_example)
            weight_loss = tf.nn.scale_regularization_loss(tf.add_n(self.losses)) if self.losses else 0.0
            loss = data_loss + weight_loss
            scaled = self.optimizer.scale_loss(loss)
        variables = self.phase_variables()
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        # After the gradients, the step's last use of `bank`: the update then finds the bank's buffer
        # unshared and writes it in place instead of copying it first (bank_lib.read_whole).
        with tf.control_dependencies([g for g in gradients if g is not None]):
            self.update_bank(outputs["embeddings"], indices)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self.trackers["loss"].update_state(loss * replicas)
        self.trackers["aggregation_loss"].update_state(aggregation)
        self.trackers["category_loss"].update_state(category)
        self.trackers["weight_decay_loss"].update_state(weight_loss * replicas)
        if weak_logits is not None:
            self.trackers["consistency_loss"].update_state(consistency)
            # The share of the batch's unlabelled examples whose weak view gave a target.
            self.trackers["consistency_mask"].update_state(consistency_mask, sample_weight=unlabelled)
        self._update_accuracy(self.target_labels(true_labels, indices), outputs["logits"])
        return {m.name: m.result() for m in self.metrics}

    def update_bank(self, embeddings, indices):
        """Blend the global batch into every replica's copy of the bank."""
        context = tf.distribute.get_replica_context()
        # tf.identity: on a one-device worker of MultiWorkerMirroredStrategy the step's inputs carry
        # no device, and the collective needs one; the copy is placed on this replica's device.
        all_indices = context.all_gather(tf.identity(indices), axis=0)
        all_embeddings = context.all_gather(tf.stop_gradient(embeddings), axis=0)
        bank_lib.update_bank(self.state.bank, all_indices, all_embeddings, self.bank_momentum)

    def _update_accuracy(self, labels, logits):
        self.trackers["top1"].update_state(labels, logits)
        if self.num_classes > 5:
            self.trackers["top5"].update_state(labels, logits)

    def test_step(self, data):
        images, true_labels = data[0], data[1]
        outputs = self(images, training=False)
        category = losses.category_loss(true_labels, outputs["logits"])
        self.trackers["category_loss"].update_state(category)
        self._update_accuracy(true_labels, outputs["logits"])
        return {name: self.trackers[name].result() for name in ("category_loss", "top1", "top5")}
