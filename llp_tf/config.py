"""TrainConfig: every setting of a training run, as plain values (the command line fills it)."""
import dataclasses
import json

METHODS = ("llp", "supervised", "two_stage")
WARMUPS = ("instance", "supervised")
DEFAULT_WARMUP_EPOCHS = 2
# Propagation block sizes (query rows x key rows), the fastest measured on CPU (BUILD.md). Here, not in
# propagation.py, so that the command lines can show them in --help without importing TensorFlow.
PROPAGATION_QUERY_ROWS = 512
PROPAGATION_KEY_ROWS = 32768
CROP_AREA_MIN = 0.2  # the paper's random resized crop keeps 20-100 % of the image area
BAD_IMAGE_POLICIES = ("error", "skip")
VERBOSE_CHOICES = ("auto", "0", "1", "2")


def setting(default, help_text, item=int):
    """A config field with its command-line help (tools/train.py makes one absl flag per field);
    item: the type of a tuple field's elements."""
    return dataclasses.field(default=default, metadata={"help": help_text, "item": item})


@dataclasses.dataclass
class TrainConfig:
    dataset: str = setting(None, "training data: tfds:NAME | idx:DIR | folder:DIR | npz:FILE")
    workdir: str = setting(None, "output directory; rerunning with the same one resumes")
    data_dir: str | None = setting(None, "TFDS data_dir")
    class_names: tuple = setting(
        (), "names of the classes in label order, e.g. cat,dog,bird (as many as the dataset has classes); "
        "default: the dataset's own (folder names, an npz's class_names array, the known names of "
        "Fashion-MNIST's idx files, else the label numbers)", item=str)
    on_bad_image: str = setting(
        "error", "folder datasets, files that are not decodable images: error (one error listing "
        "them, before training) | skip (leave them out; listed in workdir/skipped_images.txt)")
    method: str = setting(
        "llp", "llp | supervised (labelled examples only, same network) | two_stage (instance recognition, "
        "one propagation, then training on those fixed pseudo-labels: the non-iterative baseline)")
    backbone: str = setting(
        "small_cnn", "small_cnn | cifar_resnet20 | cifar_resnet56 | resnet18v2 | resnet50v2 (paper, on "
        "ImageNet: resnet18v2 and resnet50v2)")
    width: int | None = setting(
        None, "channel multiplier of the backbone; default: the backbone's own (paper: 1)")
    image_size: int | None = setting(
        None, "side of the square training images; default: the dataset's own (paper, ImageNet: 224)")
    labelled_fraction: float = setting(
        0.01, "p: share of each class that keeps its label (paper: 0.01 to 0.1)")
    kept_fraction: float = setting(
        1.0, "q: share of all training images used (labelled ones always; paper: 1, and 0.3, 0.7 in Table 3)")
    split_seed: int = setting(0, "seed of the labelled split")
    seed: int = setting(0, "seed of initialisation, shuffling and augmentation")
    deterministic: bool = setting(
        False, "deterministic TensorFlow ops (tf.config.experimental.enable_op_determinism): two runs "
        "with the same seeds give identical metrics; slower on GPUs")
    batch_size: int = setting(128, "global batch, split across replicas (paper: 128)")
    epochs: int = setting(10, "total epochs, warm-up epochs included (paper, ImageNet: 200)")
    warmup: str = setting(
        "instance", "what trains before the first propagation: instance (instance recognition, the "
        "paper) | supervised (the classifier on the labelled examples alone; a departure)")
    warmup_epochs: int | None = setting(
        None, f"epochs of the warm-up before the first propagation (default {DEFAULT_WARMUP_EPOCHS}; "
        "paper: 10 epochs of instance recognition)")
    instance_epochs: int | None = setting(
        None, "same as --warmup=instance --warmup_epochs=N (the earlier name, still accepted)")
    steps_per_epoch: int | None = setting(None, "default: kept examples // batch size (supervised too)")
    learning_rate: float = setting(0.03, "SGD learning rate (paper: 0.03)")
    lr_drop_epochs: tuple = setting(
        (), "epochs at which the learning rate is multiplied by lr_drop_factor (paper, ImageNet: "
        "120,160,180 of 200); empty: a constant learning rate")
    lr_drop_factor: float = setting(0.1, "factor applied at each of lr_drop_epochs (paper: 0.1)")
    lr_values: tuple = setting(
        (), "the learning rate of each piece of the schedule, one more than lr_drop_epochs (e.g. "
        "0.1,0.03 with --lr_drop_epochs=12: a warm-up at 0.1, then 0.03); overrides --learning_rate "
        "and --lr_drop_factor; empty: learning_rate x lr_drop_factor^i (paper)", item=float)
    momentum: float = setting(0.9, "SGD momentum (paper: 0.9)")
    weight_decay: float = setting(1e-4, "lambda of the L2 penalty lambda * ||theta||^2 (paper: 1e-4)")
    embedding_dim: int = setting(
        128, "D: size of the L2-normalised embedding and of the bank rows (paper: 128)")
    tau: float = setting(0.07, "temperature of the non-parametric softmax (paper: 0.07)")
    bank_momentum: float = setting(0.5, "m of bank <- normalize(m * bank + (1 - m) * v) (paper: 0.5)")
    bank_init: str = setting("network", "network: fill with the untrained net's embeddings (not done where "
                             "no loss reads the bank before its refill: a supervised warm-up, "
                             "--method=supervised) | random")
    k: int = setting(10, "K: labelled neighbours that vote (paper: 10)")
    t: int = setting(25, "T: neighbours of the local density (paper: 25)")
    use_density: bool = setting(True, "density-weighted LLP votes; off: plain weighted kNN")
    density_include_self: bool = setting(
        False, "count a labelled row among its own T density neighbours (released code; paper: no)")
    use_confidence: bool = setting(True, "weight each example's loss by its confidence")
    use_category_loss: bool = setting(True, "train the classifier head on the (pseudo-)labels")
    augment: bool = setting(True, "random resized crop, grayscale, colour jitter and flip (paper)")
    random_flip: bool = setting(
        True, "with --augment, mirror left-right half of the time (paper: on; turn off for digits, "
        "text, or anything whose class changes when mirrored)")
    color_jitter: bool = setting(
        True, "with --augment, jitter brightness, contrast, saturation and hue by 0.4 (paper: on; "
        "turn off where intensity carries the class, e.g. some medical images)")
    random_grayscale: bool = setting(
        True, "with --augment, RGB images to grayscale a fifth of the time (paper: on; turn off "
        "where colour carries the class)")
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
    consistency_weight: float = setting(
        0.0, "(departure) weight of a FixMatch-style loss in the LLP epochs: the classifier's confident "
        "prediction on a weakly augmented view (a crop of at least 0.8 of the area, and the flip) of each "
        "unlabelled image is the target of its logits on the training view; 0: off (paper)")
    consistency_threshold: float = setting(
        0.95, "(departure) with --consistency_weight, the smallest probability of the weak view's "
        "prediction that makes it a target (FixMatch: 0.95)")
    consistency_warmup: bool = setting(
        False, "(departure) with --consistency_weight and --warmup=supervised, the warm-up trains on "
        "the unlabelled images too (FixMatch): batches of --labelled_per_batch labelled images, whose "
        "cross-entropy weighs as a batch of labelled images, the rest unlabelled with the consistency "
        "loss; off: the warm-up sees the labelled images alone")
    refresh_bank: bool = setting(
        False, "(departure) before each propagation, re-embed every kept image unaugmented into the "
        "bank; paper: the bank holds momentum averages of the training views' embeddings")
    init_from: str | None = setting(
        None, "(departure) workdir of a finished run of the same network (e.g. --method=supervised) "
        "whose weights start this one; its bank, labels and optimizer are not taken")
    eval_knn_k: int = setting(
        200, "neighbours of the kNN evaluation, val_knn_top1 (capped at the labelled count; paper: 200, "
        "and 1 for the Table 6 ablations)")
    propagation_query_rows: int = setting(PROPAGATION_QUERY_ROWS, "query rows per propagation block")
    propagation_key_rows: int = setting(PROPAGATION_KEY_ROWS, "key rows per propagation block")
    strategy: str = setting(
        "auto", "auto | mirrored | multiworker (the cluster in TF_CONFIG) | default; auto: multiworker "
        "when TF_CONFIG names several workers, else mirrored over several GPUs, else default")
    cpu_replicas: int = setting(0, "mirror over this many logical CPUs (tests without GPUs)")
    mixed_precision: str | None = setting(None, "mixed_float16 | mixed_bfloat16 (bank stays float32)")
    jit_compile: bool = setting(False, "XLA-compile the train step (GPUs)")
    keep_checkpoints: int = setting(3, "checkpoints kept in workdir/checkpoints")
    verbose: str = setting(
        "auto", "console within an epoch: auto (a progress bar when standard output is a terminal, "
        "else a line per epoch, e.g. in a log file) | 0 nothing from Keras | 1 progress bar | 2 a line "
        "per epoch; the phase and propagation lines are printed whatever this is")
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
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.warmup not in WARMUPS:
            raise ValueError(f"--warmup must be one of {WARMUPS}, got {self.warmup!r}")
        for name in ("warmup_epochs", "instance_epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.instance_epochs is not None:
            if self.warmup != "instance":
                raise ValueError(f"--instance_epochs={self.instance_epochs} means --warmup=instance, "
                                 f"but --warmup={self.warmup}: give --warmup_epochs instead")
            if self.warmup_epochs is not None and self.warmup_epochs != self.instance_epochs:
                raise ValueError(f"--instance_epochs={self.instance_epochs} and --warmup_epochs="
                                 f"{self.warmup_epochs} disagree: give one of them")
        warmup_epochs = self.resolved_warmup_epochs()
        if self.method != "supervised" and warmup_epochs >= self.epochs:
            raise ValueError(f"--warmup_epochs={warmup_epochs} leaves no LLP epoch of "
                             f"--epochs={self.epochs}")
        self._validate_numbers()
        self.learning_rates()  # checks the schedule
        if self.k < 1 or self.t < 1:
            raise ValueError("--k and --t must be >= 1")
        if self.labelled_per_batch < 0 or self.labelled_per_batch >= self.batch_size:
            raise ValueError(f"--labelled_per_batch={self.labelled_per_batch} must be in "
                             f"[0, --batch_size={self.batch_size})")
        if not 0 <= self.confidence_threshold < 1:
            raise ValueError(f"--confidence_threshold must be in [0, 1), got {self.confidence_threshold}")
        if self.confidence_threshold and not self.use_confidence:
            raise ValueError("--confidence_threshold needs --use_confidence")
        if self.consistency_weight < 0:
            raise ValueError(f"--consistency_weight must be >= 0, got {self.consistency_weight}")
        if not 0 <= self.consistency_threshold <= 1:
            raise ValueError(f"--consistency_threshold must be in [0, 1], got {self.consistency_threshold}")
        if self.consistency_weight and (self.method != "llp" or not self.augment):
            raise ValueError("--consistency_weight needs --method=llp and --augment: it compares two "
                             "augmented views in the LLP epochs")
        if self.consistency_warmup and not (self.consistency_weight and self.warmup == "supervised"
                                            and self.labelled_per_batch):
            raise ValueError("--consistency_warmup needs --consistency_weight > 0, --warmup=supervised "
                             "and --labelled_per_batch > 0: it adds the consistency loss on the "
                             "unlabelled images of the supervised warm-up's batches")
        if self.jit_compile and self.cpu_replicas > 1:
            raise ValueError(f"--jit_compile cannot run under --cpu_replicas={self.cpu_replicas}: XLA "
                             "cannot reach the other logical CPUs' variable copies (a TensorFlow "
                             "limitation); use it on GPUs or on one CPU")
        if str(self.verbose) not in VERBOSE_CHOICES:
            raise ValueError(f"--verbose must be one of {', '.join(VERBOSE_CHOICES)}, got {self.verbose!r}")
        if self.bank_init not in ("network", "random"):
            raise ValueError(f"--bank_init must be network or random, got {self.bank_init!r}")

    def _validate_numbers(self):
        """Each number on its own: one line naming the flag, the value and what it must be."""
        checks = [
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("image_size", self.image_size is None or self.image_size >= 1,
             "must be a positive number of pixels", "leave it out for the dataset's own size"),
            ("width", self.width is None or self.width >= 1, "must be >= 1"),
            ("steps_per_epoch", self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "must be >= 1", "leave it out for kept examples // batch size"),
            ("learning_rate", self.learning_rate > 0, "must be positive"),
            ("lr_drop_factor", self.lr_drop_factor > 0, "must be positive"),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("embedding_dim", self.embedding_dim >= 1, "must be >= 1"),
            ("bank_momentum", 0 <= self.bank_momentum < 1, "must be in [0, 1)"),
            ("eval_knn_k", self.eval_knn_k >= 1, "must be >= 1"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "must be >= 1"),
            ("propagation_query_rows", self.propagation_query_rows >= 1, "must be >= 1"),
            ("propagation_key_rows", self.propagation_key_rows >= 1, "must be >= 1"),
        ]
        for name, ok, rule, *hint in checks:
            if not ok:
                raise ValueError(f"--{name} {rule}, got {getattr(self, name)}"
                                 + "".join(f" ({h})" for h in hint))

    def keras_verbose(self, is_terminal: bool) -> int:
        """Keras fit's verbose: --verbose, with auto meaning 1 (progress bar) on a terminal, else 2."""
        if str(self.verbose) == "auto":
            return 1 if is_terminal else 2
        return int(self.verbose)

    def resolved_warmup_epochs(self) -> int:
        """The warm-up's length: --warmup_epochs, else --instance_epochs, else the default."""
        for value in (self.warmup_epochs, self.instance_epochs):
            if value is not None:
                return value
        return DEFAULT_WARMUP_EPOCHS

    def resolved(self) -> "TrainConfig":
        """A copy with the warm-up spelled out: warmup_epochs set, and instance_epochs the epochs of
        instance recognition (0 with a supervised warm-up or --method=supervised)."""
        self.validate()
        warmup_epochs = self.resolved_warmup_epochs()
        instance = warmup_epochs if self.warmup == "instance" and self.method != "supervised" else 0
        return dataclasses.replace(self, warmup_epochs=warmup_epochs, instance_epochs=instance)

    def refills_bank_at_switch(self) -> bool:
        """A supervised warm-up leaves the bank holding only the labelled rows' embeddings, so the
        switch to LLP refills it from the trained network before the first propagation."""
        return (self.method != "supervised" and self.warmup == "supervised"
                and self.resolved_warmup_epochs() > 0)

    def labelled_only(self, phase: str) -> bool:
        """Whether the batches of `phase` hold the labelled examples alone, cycled: supervised training
        and the supervised warm-up, unless --consistency_warmup mixes in the unlabelled ones."""
        return phase == "supervised" and not self.consistency_warmup

    def fills_bank_at_start(self) -> bool:
        """--bank_init=network fills the bank from the untrained network at the start, unless no loss
        reads it before it is written anew: after a refill at the switch, or with --method=supervised
        (the bank serves only the kNN evaluation, which reads the labelled rows, and every training
        step writes those). Skipping saves a pass over the data."""
        return self.bank_init == "network" and not (self.method == "supervised"
                                                    or self.refills_bank_at_switch())

    def learning_rates(self):
        """The schedule as (drop epochs, values): values[i] holds from drop epoch i - 1 (or 0) to drop
        epoch i, for the whole run (warm-up included, so --method=supervised with the same flags
        trains on the same schedule)."""
        drops = [int(e) for e in self.lr_drop_epochs]
        if any(b <= a for a, b in zip(drops, drops[1:])) or any(not 0 < e < self.epochs for e in drops):
            raise ValueError(f"--lr_drop_epochs must increase and lie within (0, --epochs={self.epochs}), "
                             f"got {','.join(map(str, drops))}")
        if not self.lr_values:
            return drops, [self.learning_rate * self.lr_drop_factor ** i for i in range(len(drops) + 1)]
        values = [float(v) for v in self.lr_values]
        if len(values) != len(drops) + 1:
            raise ValueError(f"--lr_values needs one more value than --lr_drop_epochs ({len(drops)}), "
                             f"got {len(values)}")
        if any(v <= 0 for v in values):
            raise ValueError(f"--lr_values must all be positive, got {','.join(map(str, values))}")
        return drops, values

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
