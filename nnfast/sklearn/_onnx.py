"""ONNX export of ``MLPClassifier`` and ``MLPRegressor`` through skl2onnx.

``register()`` tells skl2onnx how to convert the two estimators, after which
``skl2onnx.to_onnx(model, X[:1])`` works for them as for scikit-learn's MLP: the classifier
declares skl2onnx's classifier options (``zipmap``, ``output_class_labels``, ``nocl``), so
skl2onnx's own classifier parser gives it a label and a probabilities output, and a ZipMap
unless ``zipmap=False``. This module imports skl2onnx; ``nnfast.sklearn._onnx_hook`` decides
when it is imported (never by ``import nnfast.sklearn`` alone).

The graph is the estimator's forward pass: per layer ``MatMul`` and ``Add`` then the layer's
activation, built from ``ACTIVATION_NODES`` (one entry per hidden activation name the
estimators accept, and the output activations), in the input's float type (double for
float64 inputs, else float). Then:

* binary classification: the probabilities ``[1 - p, p]``; the label the second class where
  ``p > 0.5``, as ``predict``;
* multiclass: the softmax and the class of its largest column;
* multilabel: each label's probability, and the label indicator ``p > 0.5`` as int64;
* regression: the outputs, shape ``(n, n_outputs_)`` (one output gives ``(n, 1)``,
  skl2onnx's shape for a regressor).
"""

import math

import numpy as np
from onnx import TensorProto
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    Int64TensorType,
    StringTensorType,
    guess_proto_type,
)

# skl2onnx's classifier options, as its converter of scikit-learn's MLPClassifier declares
# them: declaring "zipmap" is what makes skl2onnx parse the model as a classifier.
CLASSIFIER_OPTIONS = {
    "zipmap": [True, False, "columns"],
    "output_class_labels": [False, True],
    "nocl": [True, False],
}
CLASSIFIER_ALIAS = "NnfastMLPClassifier"
REGRESSOR_ALIAS = "NnfastMLPRegressor"

# The constants of leaky_relu and elu (negative slope 0.01, alpha 1), which
# nnfast.reference's inplace_leaky_relu / inplace_elu write as literals; should the
# reference name them, import them from there. tests/sklearn/test_onnx.py holds the graphs
# to predict's.
LEAKY_RELU_SLOPE = 0.01
ELU_ALPHA = 1.0


class _Graph:
    """Adds nodes and constants to skl2onnx's container under unique names, in one float
    type (``proto``: TensorProto.FLOAT or DOUBLE)."""

    def __init__(self, scope, container, proto):
        self.scope = scope
        self.container = container
        self.proto = proto

    def name(self, hint):
        return self.scope.get_unique_variable_name(hint)

    def constant(self, hint, values, proto=None):
        values = np.asarray(values)
        name = self.name(hint)
        proto = self.proto if proto is None else proto
        if proto == TensorProto.STRING:
            content = [str(v).encode("utf-8") for v in values.ravel()]
        else:
            dtype = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64,
                     TensorProto.INT64: np.int64}[proto]
            content = values.astype(dtype).ravel()
        self.container.add_initializer(name, proto, list(values.shape), content)
        return name

    def node(self, op_type, inputs, output=None, hint=None, **attrs):
        """Adds one node; returns its output's name (a new one unless ``output`` is given)."""
        output = self.name(hint or op_type.lower()) if output is None else output
        self.container.add_node(op_type, inputs, output,
                                name=self.scope.get_unique_operator_name(op_type), **attrs)
        return output


def _unary(op_type, **attrs):
    return lambda graph, x: graph.node(op_type, [x], **attrs)


def _leaky_relu(graph, x):
    """max(x, slope * x), which is x for x > 0 and slope * x below, as the slope is < 1
    (onnxruntime has no double LeakyRelu)."""
    return graph.node("Max", [x, graph.node("Mul", [x, graph.constant("slope",
                                                                        LEAKY_RELU_SLOPE)])])


def _elu(graph, x):
    """x where x > 0, else alpha * (exp(x) - 1) (onnxruntime has no double Elu)."""
    below = graph.node("Mul", [graph.node("Sub", [graph.node("Exp", [x]),
                                                  graph.constant("one", 1.0)]),
                               graph.constant("alpha", ELU_ALPHA)])
    positive = graph.node("Greater", [x, graph.constant("zero", 0.0)])
    return graph.node("Where", [positive, x, below])


def _softplus(graph, x):
    """max(x, 0) + log(1 + exp(-|x|)): log(1 + exp(x)) without overflow (onnxruntime has no
    double Softplus)."""
    tail = graph.node("Exp", [graph.node("Neg", [graph.node("Abs", [x])])])
    log_term = graph.node("Log", [graph.node("Add", [tail, graph.constant("one", 1.0)])])
    return graph.node("Add", [graph.node("Relu", [x]), log_term])


# erf in double, which onnxruntime's Erf does not take: its Taylor series below
# _ERF_SPLIT (_ERF_TERMS terms, absolute error ~3e-15 at the split, where the alternating
# terms cancel most) and 1 - erfc from erfc's continued fraction above (_ERF_DEPTH levels:
# ~1e-19), both measured against scipy.special.erf / erfc.
_ERF_SPLIT = 2.5
_ERF_TERMS = 40
_ERF_DEPTH = 40


def _erf_double(graph, t):
    """erf(t) to ~1e-14 from operators onnxruntime runs in double."""
    size = graph.node("Abs", [t])
    # The series on min(|t|, split): erf(s) = 2 / sqrt(pi) * s * sum_n a_n s^(2n),
    # a_n = (-1)^n / (n! (2n + 1)), by Horner's rule in s^2.
    s = graph.node("Min", [size, graph.constant("erf_split", _ERF_SPLIT)])
    s2 = graph.node("Mul", [s, s])
    coefficients = [(-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(_ERF_TERMS)]
    acc = graph.constant("erf_a", coefficients[-1])
    for coefficient in reversed(coefficients[:-1]):
        acc = graph.node("Add", [graph.node("Mul", [acc, s2]),
                                 graph.constant("erf_a", coefficient)])
    near = graph.node("Mul", [graph.node("Mul", [s, acc]),
                              graph.constant("two_over_sqrt_pi", 2 / math.sqrt(math.pi))])
    # The continued fraction on c = max(|t|, split): erfc(c) = exp(-c^2) / (sqrt(pi) K),
    # K = c + (1/2) / (c + 1 / (c + (3/2) / (c + ...))), evaluated from its tail.
    c = graph.node("Max", [size, graph.constant("erf_split", _ERF_SPLIT)])
    fraction = c
    for k in range(_ERF_DEPTH, 0, -1):
        fraction = graph.node("Add", [c, graph.node("Div", [graph.constant("erf_k", k / 2),
                                                            fraction])])
    tail = graph.node("Div", [graph.node("Exp", [graph.node("Neg", [graph.node("Mul", [c, c])])]),
                              graph.node("Mul", [fraction,
                                                 graph.constant("sqrt_pi", math.sqrt(math.pi))])])
    far = graph.node("Sub", [graph.constant("one", 1.0), tail])
    inside = graph.node("Less", [size, graph.constant("erf_split", _ERF_SPLIT)])
    magnitude = graph.node("Where", [inside, near, far])
    negative = graph.node("Less", [t, graph.constant("zero", 0.0)])
    return graph.node("Where", [negative, graph.node("Neg", [magnitude]), magnitude])


def _gelu(graph, x):
    """0.5 * x * (1 + erf(x / sqrt(2))), the exact GELU (ONNX's Gelu op needs opset 20;
    onnxruntime's Erf is float only)."""
    scaled = graph.node("Div", [x, graph.constant("sqrt2", math.sqrt(2.0))])
    erf = (_erf_double(graph, scaled) if graph.proto == TensorProto.DOUBLE
           else graph.node("Erf", [scaled]))
    one_plus = graph.node("Add", [erf, graph.constant("one", 1.0)])
    half_x = graph.node("Mul", [x, graph.constant("half", 0.5)])
    return graph.node("Mul", [half_x, one_plus])


def _silu(graph, x):
    """x / (1 + exp(-x)), x * sigmoid(x) (for x -> -inf, x / inf = -0). Not as x * Sigmoid(x):
    onnxruntime 1.20 fuses that into a QuickGelu node that it cannot run in double."""
    denominator = graph.node("Add", [graph.node("Exp", [graph.node("Neg", [x])]),
                                     graph.constant("one", 1.0)])
    return graph.node("Div", [x, denominator])


def _softmax(graph, x):
    # axis=1 is the row's classes in every opset (before opset 13 the input is coerced to 2-D
    # from axis 1 on, which a 2-D input already is).
    return graph.node("Softmax", [x], axis=1)


# Activation name (the estimators' ``activation`` strings and ``out_activation_`` values) ->
# a function adding its nodes: (graph, input name) -> output name. Every operator here is
# in ONNX's default domain since opset 13 or earlier.
ACTIVATION_NODES = {
    "identity": _unary("Identity"),
    "logistic": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "relu": _unary("Relu"),
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "gelu": _gelu,
    "silu": _silu,
    "softplus": _softplus,
    "exp": _unary("Exp"),
    "softmax": _softmax,
}


def forward_pass(graph, x, coefs, intercepts, activation, out_activation):
    """Adds the network's forward pass on input ``x``; returns the output layer's name."""
    for name in (activation, out_activation):
        if name not in ACTIVATION_NODES:
            raise ValueError(f"ONNX export: no ONNX form for the activation {name!r}; known: "
                             f"{sorted(ACTIVATION_NODES)}")
    last = len(coefs) - 1
    layer = x
    for k, (w, b) in enumerate(zip(coefs, intercepts)):
        product = graph.node("MatMul", [layer, graph.constant(f"coefficient{k}", w)])
        z = graph.node("Add", [product, graph.constant(f"intercepts{k}",
                                                         np.reshape(b, (1, -1)))])
        layer = ACTIVATION_NODES[activation if k < last else out_activation](graph, z)
    return layer


def _float_proto(operator):
    """The float type the graph computes in: double for a double input, else float."""
    proto = guess_proto_type(operator.inputs[0].type)
    return TensorProto.DOUBLE if proto == TensorProto.DOUBLE else TensorProto.FLOAT


def _tensor_type(proto):
    return DoubleTensorType if proto == TensorProto.DOUBLE else FloatTensorType


def _network_output(graph, operator, model):
    x = graph.node("Cast", [operator.inputs[0].full_name], hint="cast_input", to=graph.proto)
    return forward_pass(graph, x, model.coefs_, model.intercepts_, model.activation,
                        model.out_activation_)


def _is_multilabel(model):
    return model._label_binarizer.y_type_.startswith("multilabel")


def _label_classes(scope, model):
    """The classes as ONNX labels: (values, TensorProto.INT64 or STRING). Integer, bool and
    integral float classes are int64 (skl2onnx's ZipMap keys them so); with the ``nocl``
    option the labels are the class indices."""
    classes = np.asarray(model.classes_)
    if scope.get_options(model, dict(nocl=False))["nocl"]:
        return np.arange(len(classes)), TensorProto.INT64
    if classes.dtype.kind in "iub":
        return classes.astype(np.int64), TensorProto.INT64
    if classes.dtype.kind == "f":
        if not np.array_equal(classes, np.round(classes)):
            raise ValueError(f"ONNX export: float class labels must be integers (ONNX labels "
                             f"are int64 or strings), got {classes}")
        return classes.astype(np.int64), TensorProto.INT64
    return np.array([str(c) for c in classes], dtype=object), TensorProto.STRING


def classifier_shapes(operator):
    """skl2onnx's shape calculator: label (n,) of the classes' type ((n, n_labels) int64 for
    multilabel), probabilities (n, n_classes) in the input's float type."""
    model = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    classes, label_proto = _label_classes(operator.scope_inst, model)
    if _is_multilabel(model):
        label = Int64TensorType([n, len(classes)])
    else:
        label = (StringTensorType if label_proto == TensorProto.STRING
                 else Int64TensorType)([n])
    operator.outputs[0].type = label
    # predict_proba's columns: [1 - p, p] for one output unit, even of a single class.
    n_columns = 2 if model.n_outputs_ == 1 else model.n_outputs_
    operator.outputs[1].type = _tensor_type(_float_proto(operator))([n, n_columns])


def regressor_shapes(operator):
    """skl2onnx's shape calculator: predictions (n, n_outputs_) in the input's float type."""
    model = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = _tensor_type(_float_proto(operator))([n, model.n_outputs_])


def convert_classifier(scope, operator, container):
    """skl2onnx's converter of ``nnfast.sklearn.MLPClassifier``."""
    model = operator.raw_operator
    graph = _Graph(scope, container, _float_proto(operator))
    label_out, proba_out = operator.outputs[0].full_name, operator.outputs[1].full_name
    p = _network_output(graph, operator, model)
    if _is_multilabel(model):
        # predict's threshold: a label is on where its probability exceeds 0.5.
        graph.node("Identity", [p], proba_out)
        on = graph.node("Greater", [p, graph.constant("half", 0.5)])
        graph.node("Cast", [on], label_out, to=TensorProto.INT64)
        return
    classes, label_proto = _label_classes(scope, model)
    if model.n_outputs_ == 1:
        # One logistic unit: [1 - p, p]. ArgMax takes the first of equal columns, so p = 0.5
        # gives the first class, as predict's p > 0.5 does.
        negative = graph.node("Sub", [graph.constant("one", 1.0), p])
        graph.node("Concat", [negative, p], proba_out, axis=1)
        if len(classes) == 1:
            # A single class seen in training: predict always gives it.
            classes = np.repeat(classes, 2)
    else:
        graph.node("Identity", [p], proba_out)
    best = graph.node("ArgMax", [proba_out], axis=1, keepdims=0)
    graph.node("Gather", [graph.constant("classes", classes, label_proto), best], label_out,
               axis=0)


def convert_regressor(scope, operator, container):
    """skl2onnx's converter of ``nnfast.sklearn.MLPRegressor``."""
    model = operator.raw_operator
    graph = _Graph(scope, container, _float_proto(operator))
    graph.node("Identity", [_network_output(graph, operator, model)],
               operator.outputs[0].full_name)


def register():
    """Registers the estimators' shape calculators and converters with skl2onnx (again
    harmlessly: a second call replaces the first's)."""
    from ._mlp import MLPClassifier, MLPRegressor

    update_registered_converter(MLPClassifier, CLASSIFIER_ALIAS, classifier_shapes,
                                convert_classifier, options=CLASSIFIER_OPTIONS)
    update_registered_converter(MLPRegressor, REGRESSOR_ALIAS, regressor_shapes,
                                convert_regressor)
