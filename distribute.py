"""Data-parallel training on several devices of one machine (tf.distribute.MirroredStrategy), for the
training scripts' `--distribute mirrored` (main_functional.py, train_loso_functional.py,
train_full_dataset.py; docs/scale.md#several-devices---distribute-mirrored).

  --distribute none       one device, as always (the default)
  --distribute mirrored   one replica per visible GPU (every GPU TensorFlow sees: narrow it with
                          CUDA_VISIBLE_DEVICES), else one per CPU device; each replica holds a
                          copy of the variables, gradients are summed over replicas every step
  --cpu_devices N         split the CPU into N logical devices before TensorFlow starts (N > 0;
                          without GPUs, mirrored then has N replicas): how mirroring is tested
                          without a GPU. It changes nothing else: one process, the same cores.

Batch size: --batch_size is the GLOBAL batch. Each step takes --batch_size clips and splits them
among the R replicas (batch/R each; a last, shorter batch is split as evenly as it goes), so the
steps per epoch, the learning-rate schedule and the loss (a mean over the global batch) are those of
one device. A global batch smaller than R is refused (a replica would get no clip in every step).
What differs from one device: the order of the floating-point sums (gradients are summed per
replica, then across), and dropout masks, which each replica draws from its own random stream:
the loss curve matches one device's to rounding with dropout off, statistically with it on.

QAT (train_loso_functional_qat*.py) is refused under mirroring: tensorflow-model-optimization's QAT
guide does not list tf.distribute among the supported APIs (it is on its roadmap).
Untested on GPUs here: the tests run 2 logical CPU devices.
"""
from __future__ import annotations

import contextlib

from recipes import CPU_DEVICES, DISTRIBUTE
from util import UserError, bounded

CHOICES = ("none", "mirrored")


def add_distribute_args(ap) -> None:
    """--distribute and --cpu_devices (read back by strategy_scope)."""
    ap.add_argument("--distribute", choices=CHOICES, default=DISTRIBUTE,
                    help="none: one device; mirrored: data-parallel over every visible GPU (else "
                         "the CPU devices); --batch_size is then the global batch, split among "
                         "the replicas")
    ap.add_argument("--cpu_devices", type=bounded(int, lambda v: v >= 0, ">= 0"),
                    default=CPU_DEVICES,
                    help="split the CPU into N logical devices (0: don't); for testing mirroring "
                         "without a GPU")


def refuse_for_qat(distribute: str) -> None:
    if distribute != "none":
        raise UserError(f"--distribute {distribute}: QAT trains on one device only "
                        "(tensorflow-model-optimization does not support tf.distribute); "
                        "drop the flag")


def split_cpu(count: int) -> None:
    """The CPU as `count` logical devices; must run before TensorFlow's first op (a second call
    with the same count does nothing)."""
    if count <= 0:
        return
    from tf_env import tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:  # TensorFlow has started already
        raise UserError(f"--cpu_devices {count}: set it before anything runs in TensorFlow "
                        f"({e})") from None


def unsharded(dataset, distribute: str):
    """The training dataset as mirroring takes it: every batch split among the replicas of this
    one process, no auto-sharding (a multi-worker rewrite; it warns about our cardinality)."""
    if distribute == "none":
        return dataset
    from tf_env import tf
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def strategy_scope(distribute: str, batch_size: int, cpu_devices: int = CPU_DEVICES):
    """(context, replicas): the scope in which the model is built, compiled and fitted."""
    split_cpu(cpu_devices)
    if distribute == "none":
        return contextlib.nullcontext(), 1
    from tf_env import tf
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    replicas = strategy.num_replicas_in_sync
    if batch_size < replicas:
        raise UserError(f"--batch_size {batch_size} is smaller than the {replicas} replicas of "
                        f"--distribute {distribute}: the batch is global, split among the "
                        "replicas, so it needs at least one clip per replica")
    return strategy.scope(), replicas
