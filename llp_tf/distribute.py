"""The one place that builds the distribution strategy."""
import tensorflow as tf


def split_cpu(num_devices: int):
    """Split the CPU into logical devices (to exercise multi-replica code without GPUs).

    Must run before anything touches TensorFlow's devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def make_strategy(name: str = "auto", cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """"auto": MirroredStrategy over all GPUs when there are several, else the default strategy.
    "mirrored": MirroredStrategy over all GPUs, or over `cpu_replicas` logical CPUs when given.
    "default": no distribution (one device).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored" and cpu_replicas:
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < cpu_replicas:
            raise ValueError(f"{cpu_replicas} CPU replicas asked for but only {len(cpus)} logical CPUs "
                             "exist: call split_cpu before TensorFlow starts")
        return tf.distribute.MirroredStrategy([d.name for d in cpus[:cpu_replicas]])
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name == "auto":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}: choose auto, mirrored or default")
