"""Pretrain a BERT-family model (MLM, UniLM or LM) from TFRecords under any tf.distribute strategy.

The same script runs on one device, on the GPUs of one machine (`--strategy mirrored`), on
several machines (`--strategy multiworker`, each worker started with its TF_CONFIG) and on a
TPU (`--strategy tpu --tpu NAME`). Optimizer: AdamW + LAMB layer adaptation + piecewise-linear
learning rate (warm-up, then linear decay to 0) + gradient accumulation, from bert4x.optimizers
(kexue.fm/archives/7094). Every `--checkpoint-every` updates the weights are written in the
original checkpoint format (`model.ckpt-STEP`), loadable by bert4x and by the original code.

Loss: for each sequence, the mean cross-entropy over its labelled positions (masked tokens
for mlm, next tokens of the target for unilm/lm); then the mean over sequences. Every
sequence weighs the same, so splitting a global batch over replicas changes nothing.

    python pretraining/data.py --task mlm --corpus corpus.txt --vocab vocab.txt \
        --output records/train.tfrecord --segmenter jieba
    python pretraining/pretrain.py --task mlm --strategy mirrored --config bert_config.json \
        --vocab vocab.txt --records 'records/*.tfrecord' --batch-size 256 --steps 100000 \
        --grad-accum-steps 4 --output-dir output
    python pretraining/pretrain.py --smoke --strategy mirrored --devices 2 --task mlm

See docs/pretraining.md.
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # tf.distribute needs the TF backend

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert4x.checkpoints import save_weights_as_checkpoint  # noqa: E402
from bert4x.model_config import read_json_config  # noqa: E402
from bert4x.models import build_transformer_model  # noqa: E402
from bert4x.optimizers import (  # noqa: E402
    AdamLAMB,
    extend_with_gradient_accumulation,
    extend_with_piecewise_linear_lr,
)
from bert4x.xla import fuse_elementwise  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402

TASKS = {"mlm": "encoder", "unilm": "unilm", "lm": "lm"}  # task -> bert4x application
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
NO_DECAY = ["Norm", "bias"]  # excluded from weight decay and layer adaptation
DEFAULTS = dict(  # a full run (BERT-base scale); every value is a flag
    sequence_length=512,
    batch_size=256,
    steps=100000,
    grad_accum_steps=1,
    learning_rate=1e-3,
    warmup_steps=10000,
    checkpoint_every=10000,
    log_every=100,
)
SMOKE = dict(  # --smoke: the bundled corpus, a tiny random model, a few dozen updates
    sequence_length=64,
    batch_size=8,
    steps=40,
    grad_accum_steps=2,
    learning_rate=2e-2,
    warmup_steps=4,
    checkpoint_every=20,
    log_every=10,
)
SMOKE_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    hidden_act="gelu",
    max_position_embeddings=128,
    type_vocab_size=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--task", choices=sorted(TASKS), default="mlm")
    add("--strategy", choices=STRATEGIES, default="default")
    add("--tpu", default=None, help="TPU name or grpc:// address (--strategy tpu)")
    add("--devices", type=int, default=None, help="mirrored on CPU: N logical CPU devices")
    add("--model", default="bert", help="bert, roberta, albert, roformer, roformer_v2")
    add("--config", help="bert_config.json of the model to train")
    add("--vocab", help="vocab.txt the records were built with (copied to --output-dir)")
    add("--checkpoint", help="original checkpoint to start from (continued pretraining)")
    add("--records", help="TFRecord files from data.py: comma-separated files or globs")
    add("--sequence-length", type=int, help=f"default {DEFAULTS['sequence_length']}")
    add("--batch-size", type=int, help="global batch per call, over all replicas")
    add("--steps", type=int, help="optimizer updates (each of --grad-accum-steps batches)")
    add("--grad-accum-steps", type=int, help="batches summed into one update")
    add("--learning-rate", type=float, help="peak learning rate")
    add("--warmup-steps", type=int, help="updates of linear warm-up from 0")
    add("--weight-decay", type=float, default=0.01)
    add("--checkpoint-every", type=int, help="updates between original-format checkpoints")
    add("--log-every", type=int, help="updates per logged (mean) loss")
    add("--steps-per-execution", type=int, default=1, help="batches per compiled call (TPU)")
    add(
        "--jit-compile",
        choices=("auto", "true", "false", "fused"),
        default="auto",
        help="fused: XLA for the elementwise work only, oneDNN matmuls (bert4x.xla; CPU)",
    )
    add("--output-dir", default="pretraining_output")
    add("--seed", type=int, default=0)
    add("--smoke", action="store_true", help="tiny model on the bundled corpus, a few steps")
    args = parser.parse_args(argv)
    for name, value in (SMOKE if args.smoke else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not args.smoke and not (args.config and args.vocab and args.records):
        parser.error("give --config, --vocab and --records (or --smoke)")
    if args.strategy == "tpu" and not args.tpu and "TPU_NAME" not in os.environ:
        parser.error("--strategy tpu needs --tpu (or the TPU_NAME environment variable)")
    if args.steps % args.log_every:
        parser.error(f"--steps {args.steps} must be a multiple of --log-every {args.log_every}")
    if args.log_every * args.grad_accum_steps % args.steps_per_execution:
        parser.error("--log-every x --grad-accum-steps must be a multiple of --steps-per-execution")
    return args


# ----------------------------------------------------------------------------- strategy


def logical_cpus(count):
    """Split the CPU into `count` logical devices (before TF initialises); their names."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count
    )
    return [f"/cpu:{i}" for i in range(count)]


def make_strategy(args):
    """The tf.distribute strategy named by --strategy (created before any other TF op)."""
    if args.strategy == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=args.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if args.strategy == "multiworker":  # the cluster comes from TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    if args.strategy == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if args.devices and args.devices > 1 and not gpus:
            return tf.distribute.MirroredStrategy(logical_cpus(args.devices))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """True on the worker that writes files: the chief, worker 0 without a chief, or alone."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


# ----------------------------------------------------------------------------- model


def make_optimizer(args):
    """LAMB (AdamW + layer adaptation) with warm-up/decay and gradient accumulation.

    The schedule counts updates: 0 -> 1 over --warmup-steps, then 1 -> 0 at --steps.
    """
    cls = extend_with_piecewise_linear_lr(AdamLAMB)
    schedule = {args.warmup_steps: 1.0}
    if args.steps > args.warmup_steps:
        schedule[args.steps] = 0.0
    kwargs = dict(
        learning_rate=args.learning_rate,
        weight_decay_rate=args.weight_decay,
        exclude_from_weight_decay=NO_DECAY,
        exclude_from_layer_adaptation=NO_DECAY,
        lr_schedule=schedule,
    )
    if args.grad_accum_steps > 1:
        cls = extend_with_gradient_accumulation(cls)
        kwargs["grad_accum_steps"] = args.grad_accum_steps
    return cls(**kwargs)


def masked_sequence_loss(labels, logits):
    """Per sequence: mean CE over positions with label > 0 (0 = not a target). Shape [b]."""
    labels = keras.ops.cast(labels, "int32")
    weights = keras.ops.cast(labels > 0, "float32")
    losses = keras.ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return keras.ops.sum(losses * weights, axis=-1) / keras.ops.maximum(
        keras.ops.sum(weights, axis=-1), 1.0
    )


def build_model(args, strategy):
    """(bert4x model with logits output, built optimizer), variables placed by `strategy`."""
    with strategy.scope():
        model = build_transformer_model(
            args.config,
            args.checkpoint,
            model=args.model,
            application=TASKS[args.task],
            with_mlm="linear",
            sequence_length=args.sequence_length,
        )
        optimizer = make_optimizer(args)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def use_xla(args, strategy):
    """--jit-compile auto: XLA on one accelerator; TF cannot compile tf.distribute steps on CPU."""
    if args.jit_compile != "auto":
        return args.jit_compile == "true"
    default = strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()
    return default and bool(tf.config.list_physical_devices("GPU"))


def make_train_function(args, strategy, model, optimizer):
    """A tf.function running `--steps-per-execution` batches; returns the sum of their losses.

    Each replica's loss is sum(per-sequence losses) / global batch; the optimizer all-reduces
    (sums) the replicas' gradients, so a step sees the gradient of the global-batch mean.
    (A loop instead of `Model.fit`: Keras 3 fit fails under multi-worker
    MultiWorkerMirroredStrategy, keras-team/keras#20585.)
    """
    variables = model.trainable_variables

    def replica_step(batch):
        (token_ids, segment_ids), labels = batch
        with tf.GradientTape() as tape:
            logits = model([token_ids, segment_ids], training=True)
            loss = tf.reduce_sum(masked_sequence_loss(labels, logits)) / args.batch_size
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function(jit_compile=use_xla(args, strategy) or None)
    def train_function(iterator):
        total = tf.constant(0.0)
        for _ in tf.range(args.steps_per_execution):
            losses = strategy.run(replica_step, args=(next(iterator),))
            total += strategy.reduce("SUM", losses, axis=None)
        return total

    return train_function


# ----------------------------------------------------------------------------- checkpoints


def save_original(model, prefix, step):
    """Write the original-format checkpoint `prefix` (with global_step); gs:// via a temp dir."""
    extra = {"global_step": np.array(step, dtype="int64")}
    if not prefix.startswith("gs://"):
        return save_weights_as_checkpoint(model, prefix, extra_variables=extra)
    directory, name = prefix.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as local:
        save_weights_as_checkpoint(model, os.path.join(local, name), extra_variables=extra)
        for file in os.listdir(local):
            tf.io.gfile.copy(os.path.join(local, file), f"{directory}/{file}", overwrite=True)
    return prefix


def train(args, strategy, model, optimizer, dataset, chief):
    """Run --steps updates; an original checkpoint every --checkpoint-every; mean losses logged.

    Returns [{"step": updates, "loss": mean loss of the window}] (also in history.json).
    """
    train_function = make_train_function(args, strategy, model, optimizer)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    window = args.log_every * args.grad_accum_steps  # batches per logged loss
    calls, history, total = 0, [], 0.0
    for _ in range(args.steps * args.grad_accum_steps // args.steps_per_execution):
        total += float(train_function(iterator))
        calls += args.steps_per_execution
        updates = calls // args.grad_accum_steps
        if calls % window == 0:
            history.append({"step": updates, "loss": total / window})
            print(f"step {updates}/{args.steps}  loss {total / window:.4f}", flush=True)
            total = 0.0
            if chief:
                with tf.io.gfile.GFile(f"{args.output_dir}/history.json", "w") as file:
                    file.write(json.dumps(history, indent=1))
        if chief and calls % (args.checkpoint_every * args.grad_accum_steps) == 0:
            save_original(model, f"{args.output_dir}/model.ckpt-{updates}", updates)
    return history


# ----------------------------------------------------------------------------- smoke data


def smoke_inputs(args):
    """--smoke: vocab, config and records of the bundled corpus under --output-dir/smoke."""
    directory = os.path.join(args.output_dir, "smoke")
    documents = data.read_documents(data.SAMPLE_CORPUS)
    args.vocab = args.vocab or data.corpus_vocab(documents, os.path.join(directory, "vocab.txt"))
    if args.config is None:
        vocab_size = len(data.load_vocab(args.vocab))
        args.config = os.path.join(directory, "bert_config.json")
        with open(args.config, "w", encoding="utf-8") as file:
            json.dump({**SMOKE_CONFIG, "vocab_size": vocab_size}, file, indent=2)
    if args.records is None:
        segmenter = data.load_segmenter(data.SAMPLE_WORDS)
        word_tokenizer = data.WordTokenizer(args.vocab, True, segmenter)
        rng = np.random.default_rng(args.seed)
        examples = data.build_examples(
            args.task, documents, word_tokenizer, args.sequence_length, rng, dupe_factor=4
        )
        args.records = os.path.join(directory, f"{args.task}.tfrecord")
        data.write_records(args.records, examples, args.task)


def write_probe(model, dataset, path):
    """Save one batch and the trained model's logits on it (the smoke test compares them)."""
    (token_ids, segment_ids), _ = next(iter(dataset))
    logits = model([token_ids, segment_ids], training=False)
    np.savez(
        path,
        token_ids=token_ids.numpy(),
        segment_ids=segment_ids.numpy(),
        logits=keras.ops.convert_to_numpy(logits),
    )


# ----------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "pretrain.py runs on tf.distribute and needs KERAS_BACKEND=tensorflow. For JAX use "
            f"keras.distribution.DataParallel (docs/pretraining.md). Received: "
            f"{keras.backend.backend()!r}."
        )
    if args.jit_compile == "fused":
        fuse_elementwise()  # before any TF op: TensorFlow reads its XLA flags once
    strategy = make_strategy(args)  # before any other TF op (logical devices, TPU init)
    keras.utils.set_random_seed(args.seed)
    chief = is_chief(strategy)
    if chief:
        tf.io.gfile.makedirs(args.output_dir)
    if args.smoke:
        smoke_inputs(args)
    model, optimizer = build_model(args, strategy)
    dataset = data.load_dataset(
        args.records, args.task, args.batch_size, args.sequence_length, seed=args.seed
    )
    print(
        f"strategy {type(strategy).__name__} with {strategy.num_replicas_in_sync} replicas; "
        f"{args.steps} updates of {args.grad_accum_steps} x {args.batch_size} sequences",
        flush=True,
    )
    history = train(args, strategy, model, optimizer, dataset, chief)
    if chief:
        save_original(model, f"{args.output_dir}/bert_model.ckpt", args.steps)
        with tf.io.gfile.GFile(f"{args.output_dir}/bert_config.json", "w") as file:
            file.write(json.dumps(read_json_config(args.config), indent=2))
        vocab = f"{args.output_dir}/vocab.txt"
        if os.path.abspath(args.vocab) != os.path.abspath(vocab):
            tf.io.gfile.copy(args.vocab, vocab, overwrite=True)
        if not args.output_dir.startswith("gs://"):
            model.save_weights(os.path.join(args.output_dir, "model.weights.h5"))
        if args.smoke:
            write_probe(model, dataset, os.path.join(args.output_dir, "probe.npz"))
    return history


if __name__ == "__main__":
    main()
