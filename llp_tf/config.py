"""TrainConfig: every setting of a training run, as plain values (the command line fills it)."""
import dataclasses
import json

METHODS = ("llp", "supervised", "two_stage")
# Propagation block sizes (query rows x key rows), the fastest measured on CPU (BUILD.md). Here, not in
# propagation.py, so that the command lines can show them in --help without importing TensorFlow.
PROPAGATION_QUERY_ROWS = 512
PROPAGATION_KEY_ROWS = 32768
CROP_AREA_MIN = 0.2  # the paper's random resized crop keeps 20-100 % of the image area
BAD_IMAGE_POLICIES = ("error", "skip")


def setting(default, help_text):
    """A config field with its command-line help (tools/train.py makes one absl flag per field)."""
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass
class TrainConfig:
    dataset: str = setting(None, "training data: tfds:NAME | idx:DIR | folder:DIR | npz:FILE")
    workdir: str = setting(None, "output directory; rerunning with the same one resumes")
    data_dir: str | None = setting(None, "TFDS data_dir")
    on_bad_image: str = setting(
        "error", "folder datasets, files that are not decodable images: error (one error listing "
        "them, before training) | skip (leave them out; listed in workdir/skipped_images.txt)")
    method: str = setting(
        "llp", "llp | supervised (labelled examples only, same network) | two_stage (instance recognition, "
        "one propagation, then training on those fixed pseudo-labels: the non-iterative baseline)")
    backbone: str = setting("small_cnn", "small_cnn | cifar_resnet20 | cifar_resnet56 | resnet18v2 | resnet50v2")
    width: int | None = setting(None, "channel multiplier of the backbone")
    image_size: int | None = setting(None, "side of the square training images; default: the dataset's own")
    labelled_fraction: float = setting(0.01, "p: share of each class that keeps its label")
    kept_fraction: float = setting(1.0, "q: share of all training images used (labelled ones always)")
    split_seed: int = setting(0, "seed of the labelled split")
    seed: int = setting(0, "seed of initialisation, shuffling and augmentation")
    deterministic: bool = setting(
        False, "deterministic TensorFlow ops (tf.config.experimental.enable_op_determinism): two runs "
        "with the same seeds give identical metrics; slower on GPUs")
    batch_size: int = setting(128, "global batch, split across replicas")
    epochs: int = setting(10, "total epochs, instance-recognition epochs included")
    instance_epochs: int = setting(2, "instance-recognition warm-up epochs before the first propagation")
    steps_per_epoch: int | None = setting(None, "default: kept examples // batch size (supervised too)")
    learning_rate: float = setting(0.03, "SGD learning rate (paper: 0.03)")
    lr_drop_epochs: tuple = setting((), "epochs at which the learning rate is multiplied by lr_drop_factor")
    lr_drop_factor: float = setting(0.1, "factor applied at each of lr_drop_epochs")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(1e-4, "lambda of the L2 penalty lambda * ||theta||^2")
    embedding_dim: int = setting(128, "D: size of the L2-normalised embedding and of the bank rows")
    tau: float = setting(0.07, "temperature of the non-parametric softmax")
    bank_momentum: float = setting(0.5, "m of bank <- normalize(m * bank + (1 - m) * v)")
    bank_init: str = setting("network", "network: fill with the untrained net's embeddings | random")
    k: int = setting(10, "K: labelled neighbours that vote")
    t: int = setting(25, "T: neighbours of the local density")
    use_density: bool = setting(True, "density-weighted LLP votes; off: plain weighted kNN")
    density_include_self: bool = setting(
        False, "count a labelled row among its own T density neighbours (released code; paper: no)")
    use_confidence: bool = setting(True, "weight each example's loss by its confidence")
    use_category_loss: bool = setting(True, "train the classifier head on the (pseudo-)labels")
    augment: bool = setting(True, "random resized crop, grayscale, colour jitter and flip (paper)")
    crop_area_min: float = setting(
        CROP_AREA_MIN, "smallest share of the image area the random resized crop keeps (paper: 0.2; "
        "other values are a departure)")
    # Departures from the paper, off by default; RESULTS.md measures each against the faithful run.
    labelled_per_batch: int = setting(
        0, "(departure) labelled examples in every batch, cycled, the rest unlabelled; 0: batches "
        "drawn uniformly (paper)")
    warmup_category_loss: bool = setting(
        False, "(departure) during instance recognition also train the classifier on the batch's "
        "labelled examples")
    confidence_threshold: float = setting(
        0.0, "(departure) pseudo-labels with a confidence below this weigh 0 in the loss")
    refresh_bank: bool = setting(
        False, "(departure) before each propagation, re-embed every kept image unaugmented into the "
        "bank; paper: the bank holds momentum averages of the training views' embeddings")
    init_from: str | None = setting(
        None, "(departure) workdir of a finished run of the same network (e.g. --method=supervised) "
        "whose weights start this one; its bank, labels and optimizer are not taken")
    eval_knn_k: int = setting(200, "neighbours of the kNN evaluation (capped at the labelled count)")
    propagation_query_rows: int = setting(PROPAGATION_QUERY_ROWS, "query rows per propagation block")
    propagation_key_rows: int = setting(PROPAGATION_KEY_ROWS, "key rows per propagation block")
    strategy: str = setting(
        "auto", "auto | mirrored | multiworker (the cluster in TF_CONFIG) | default; auto: multiworker "
        "when TF_CONFIG names several workers, else mirrored over several GPUs, else default")
    cpu_replicas: int = setting(0, "mirror over this many logical CPUs (tests without GPUs)")
    mixed_precision: str | None = setting(None, "mixed_float16 | mixed_bfloat16 (bank stays float32)")
    jit_compile: bool = setting(False, "XLA-compile the train step (GPUs)")
    keep_checkpoints: int = setting(3, "checkpoints kept in workdir/checkpoints")
    verbose: int = setting(2, "Keras fit verbosity: 0 silent, 1 progress bar, 2 a line per epoch")
    state_dump: str | None = setting(
        None, "(tests) write this process's final bank, labels and confidences, one row per local "
        "replica copy, to this .npz")

    def validate(self):
        """Clear errors for settings that cannot work, before any data is read."""
        if not self.dataset or not self.workdir:
            raise ValueError("--dataset and --workdir are required")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {self.method!r}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"--on_bad_image must be one of {BAD_IMAGE_POLICIES}, "
                             f"got {self.on_bad_image!r}")
        for name in ("labelled_fraction", "kept_fraction"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"--{name} must be in (0, 1], got {value}")
        if not 0 < self.crop_area_min <= 1:
            raise ValueError(f"--crop_area_min must be in (0, 1], got {self.crop_area_min}")
        if self.tau <= 0:
            raise ValueError(f"--tau must be positive, got {self.tau}")
        if self.epochs < 1 or self.instance_epochs < 0:
            raise ValueError("--epochs must be >= 1 and --instance_epochs >= 0")
        if self.method != "supervised" and self.instance_epochs >= self.epochs:
            raise ValueError(f"--instance_epochs={self.instance_epochs} leaves no LLP epoch of "
                             f"--epochs={self.epochs}")
        if self.k < 1 or self.t < 1:
            raise ValueError("--k and --t must be >= 1")
        if self.labelled_per_batch < 0 or self.labelled_per_batch >= self.batch_size:
            raise ValueError(f"--labelled_per_batch={self.labelled_per_batch} must be in "
                             f"[0, --batch_size={self.batch_size})")
        if not 0 <= self.confidence_threshold < 1:
            raise ValueError(f"--confidence_threshold must be in [0, 1), got {self.confidence_threshold}")
        if self.confidence_threshold and not self.use_confidence:
            raise ValueError("--confidence_threshold needs --use_confidence")
        if self.jit_compile and self.cpu_replicas > 1:
            raise ValueError(f"--jit_compile cannot run under --cpu_replicas={self.cpu_replicas}: XLA "
                             "cannot reach the other logical CPUs' variable copies (a TensorFlow "
                             "limitation); use it on GPUs or on one CPU")
        if self.bank_init not in ("network", "random"):
            raise ValueError(f"--bank_init must be network or random, got {self.bank_init!r}")

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
