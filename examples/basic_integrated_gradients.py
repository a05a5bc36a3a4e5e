"""Integrated gradients for a BERT text classifier: which tokens drive the prediction.

    python examples/basic_integrated_gradients.py --smoke        # tiny random model, no download
    python examples/basic_integrated_gradients.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --weights classifier.weights.h5 \
        --text "这家酒店的服务太差了" --num-labels 2

The classifier is BERT + pooled [CLS] + Dense softmax (load fine-tuned weights with --weights;
without them the head is random). IG over the Embedding-Token output with a zero baseline
(kexue.fm/archives/7533): prints per token the signed Σ_d IG (these add up to F(x) − F(x')) and
the min-max normalised ‖IG_t‖₂ and max_d |IG_t,d| scores the post displays.
"""

import keras
import numpy as np
from task_common import TINY_CONFIG, model_parser, random_model_files, require_model

from bert4x.attribution import METHODS, integrated_gradients
from bert4x.models import build_transformer_model
from bert4x.tokenizers import Tokenizer

TEXT = "这家酒店的服务太差了，再也不来了"
NUM_LABELS = 2
STEPS = 50
METHOD = "trapezoid"
MAXLEN = 128


def parse_args():
    parser = model_parser(__doc__.split("\n")[0])
    add = parser.add_argument
    add("--weights", help="fine-tuned classifier weights (.weights.h5) for this architecture")
    add("--text", default=TEXT)
    add("--num-labels", type=int, default=NUM_LABELS)
    add("--label", type=int, default=None, help="class to explain; default: the predicted one")
    add("--steps", type=int, default=STEPS)
    add("--method", default=METHOD, choices=METHODS)
    add("--maxlen", type=int, default=MAXLEN)
    add("--output-dir", default="ig_output", help="where --smoke writes its model")
    add("--smoke", action="store_true", help="tiny random model, few steps")
    args = parser.parse_args()
    require_model(parser, args)
    return args


def build_classifier(config, checkpoint, model, num_labels):
    """BERT -> Pooler ([CLS], tanh) -> Dense softmax [b, num_labels]."""
    bert = build_transformer_model(config, checkpoint, model=model, with_pool=True)
    output = keras.layers.Dense(num_labels, activation="softmax", name="Classifier")(bert.output)
    return keras.Model(bert.inputs, output)


def min_max(values):
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def main():
    args = parse_args()
    if args.smoke:
        keras.utils.set_random_seed(42)
        config, _, vocab = random_model_files(args.output_dir, [args.text], TINY_CONFIG)
        checkpoint = None  # the random checkpoint has no pooler; a fresh random model is alike
        args.steps = min(args.steps, 20)
    else:
        config, checkpoint, vocab = args.config, args.checkpoint, args.vocab
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    classifier = build_classifier(config, checkpoint, args.model, args.num_labels)
    if args.weights:
        classifier.load_weights(args.weights)
    token_ids, segment_ids = tokenizer.encode(args.text, maxlen=args.maxlen)
    probas = np.asarray(
        classifier.predict([np.array([token_ids]), np.array([segment_ids])], verbose=0)
    )
    label = int(np.argmax(probas[0])) if args.label is None else args.label
    print(f"text: {args.text}")
    print(f"probabilities: {np.round(probas[0], 4).tolist()}, explaining label {label}")

    ig, per_token = integrated_gradients(
        classifier, token_ids, segment_ids, label, steps=args.steps, method=args.method
    )
    embeddings = np.asarray(classifier.get_layer("Embedding-Token")(np.array([token_ids])))
    embeddings = keras.ops.convert_to_tensor(embeddings)  # no mask attached
    baseline = keras.ops.zeros_like(embeddings)
    sub = keras.Model(
        [*classifier.inputs, classifier.get_layer("Embedding-Token").output], classifier.output
    )
    ids = [keras.ops.convert_to_tensor(np.array([v])) for v in (token_ids, segment_ids)]
    f_x = float(np.asarray(sub([*ids, embeddings]))[0, label])
    f_0 = float(np.asarray(sub([*ids, baseline]))[0, label])
    print(f"completeness ({args.method}, {args.steps} steps): sum IG = {ig.sum():.6f}, "
          f"F(x) - F(x') = {f_x - f_0:.6f}")  # fmt: skip
    l2 = min_max(np.linalg.norm(ig, axis=1))
    peak = min_max(np.abs(ig).max(axis=1))
    print("token\tsum_d IG\tL2 (norm.)\tmax|IG| (norm.)")
    for token, signed, a, b in zip(tokenizer.ids_to_tokens(token_ids), per_token, l2, peak):
        print(f"{token}\t{signed:+.6f}\t{a:.3f}\t{b:.3f}")


if __name__ == "__main__":
    main()
