"""LibSVM model files (``svm_save_model``): C-SVC, nu-SVC, epsilon-SVR and nu-SVR, converted by golive itself.

onnxmltools 1.16's LibSVM converter does not import (``cast_list``, ``common.data_types`` and ``from svm import
C_SVC`` are gone: onnx/onnxmltools#735, fix in PR #776). golive writes the same ONNX-ML operators that converter
and skl2onnx write (SVMClassifier, SVMRegressor; scikit-learn's SVC is libsvm inside, so skl2onnx's attribute
mapping is the tested one): support vectors, dual coefficients, -rho as the ONNX rho, the kernel and its
parameters, libsvm's probability (Platt) parameters. ONNX Runtime's implementation is a port of libsvm's.

Outputs: a classifier gives ``label`` (int64 [batch]) and ``probabilities`` ([batch, classes], libsvm's label
order) for a model trained with ``-b 1``, otherwise ``decision_values`` ([batch, pairs], one per class pair,
libsvm's order); a regressor gives ``value`` ([batch, 1]). Verification runs ``svm_predict`` on the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from golive.errors import ExportError, ModelLoadError, SourceNotFoundError, require
from golive.frontends._tabular import feature_count, name_batch_axis, tabular_input
from golive.frontends.base import ExportResult, LoadedModel
from golive.spec import ConvertOptions
from golive.tensors import TensorSpec

__all__ = ["FRONTEND", "looks_like_libsvm"]

SVM_TYPES = {0: "c_svc", 1: "nu_svc", 2: "one_class", 3: "epsilon_svr", 4: "nu_svr"}
KERNELS = {0: "LINEAR", 1: "POLY", 2: "RBF", 3: "SIGMOID"}


def looks_like_libsvm(head: bytes) -> bool:
    return head.startswith(b"svm_type ")


def _svm():
    require("libsvm", package="libsvm-official", extra="libsvm", purpose="Loading a LibSVM model")
    from libsvm import svmutil

    return svmutil


class LibSvmFrontend:
    name = "libsvm"

    def load(self, source: str, options: ConvertOptions) -> LoadedModel:
        path = Path(source)
        if not path.is_file():
            raise SourceNotFoundError(f"source {source} does not exist or is not a file")
        head = path.open("rb").read(64)
        if not looks_like_libsvm(head):
            raise ModelLoadError(
                f"{path.name} is not a LibSVM model file (it does not start with 'svm_type')",
                hint="save the model with svm_save_model(path, model), or pass the right --framework",
            )
        svmutil = _svm()
        model = svmutil.svm_load_model(str(path))
        if not model:
            raise ModelLoadError(
                f"libsvm cannot read {path.name}", hint="is the file complete? save it again with svm_save_model"
            )
        svm_type = model.get_svm_type()
        if svm_type not in (0, 1, 3, 4):
            raise ModelLoadError(
                f"{path.name} is a {SVM_TYPES.get(svm_type, svm_type)} model; golive converts C-SVC, nu-SVC, "
                "epsilon-SVR and nu-SVR",
                hint="one-class SVMs are not supported yet",
            )
        if model.param.kernel_type not in KERNELS:
            raise ModelLoadError(
                f"{path.name} uses a precomputed kernel: its inputs are kernel values, not features",
                hint="train with a linear, polynomial, RBF or sigmoid kernel",
            )
        classifier = svm_type in (0, 1)
        probability = bool(classifier and model.is_probability_model())
        features = max((k for row in model.get_SV() for k in row if k > 0), default=0)
        outputs = ["label", "probabilities" if probability else "decision_values"] if classifier else ["value"]
        return LoadedModel(
            framework=self.name,
            source=source,
            model=model,
            kind=SVM_TYPES[svm_type],
            inputs=[tabular_input(features)],
            classifier=classifier,
            output_names=outputs,
            details={"probability": probability, "features": features},
        )

    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult:
        import onnx
        from onnx import TensorProto, helper

        model = loaded.model
        n = feature_count(inputs, "LibSVM")
        if n < loaded.details["features"]:
            raise ExportError(
                f"the model's support vectors use feature {loaded.details['features']}, the input has {n}",
                hint=f"--input input:float32[batch,{loaded.details['features']}] (or more)",
            )
        sv = np.zeros((model.l, n), np.float32)
        for i, row in enumerate(model.get_SV()):
            for k, v in row.items():
                if k > 0:
                    sv[i, k - 1] = v
        p = model.param
        attrs: dict[str, Any] = {
            "kernel_type": KERNELS[p.kernel_type],
            "kernel_params": [float(p.gamma), float(p.coef0), float(p.degree)],
            "support_vectors": sv.ravel().tolist(),
            "post_transform": "NONE",
        }
        nr_class = model.get_nr_class()
        coef = np.array([[model.sv_coef[j][i] for i in range(model.l)] for j in range(max(nr_class - 1, 1))], np.float32)
        pairs = nr_class * (nr_class - 1) // 2 if loaded.classifier else 1
        attrs["coefficients"] = coef.ravel().tolist()
        attrs["rho"] = [-float(model.rho[i]) for i in range(pairs)]
        x = helper.make_tensor_value_info(inputs[0].name, TensorProto.FLOAT, ["batch", n])
        if loaded.classifier:
            labels = [int(v) for v in model.get_labels()]
            attrs.update(classlabels_ints=labels, vectors_per_class=[int(model.nSV[i]) for i in range(nr_class)])
            probability = loaded.details["probability"]
            width = nr_class if probability else pairs
            if probability and nr_class > 2:  # pairwise coupling, as libsvm's multiclass_probability
                attrs["prob_a"] = [float(model.probA[i]) for i in range(pairs)]
                attrs["prob_b"] = [float(model.probB[i]) for i in range(pairs)]
            assert loaded.output_names is not None  # load() names a classifier's two outputs
            out_name = loaded.output_names[1]
            inits = [
                helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                helper.make_tensor("two", TensorProto.INT64, [1], [2]),
            ]
            binary = nr_class == 2
            inits.append(helper.make_tensor("labels", TensorProto.INT64, [nr_class], labels))
            nodes = [
                helper.make_node(
                    "SVMClassifier", [x.name], ["svm_label" if probability else "label", "scores"], domain="ai.onnx.ml", **attrs
                )
            ]
            if not binary:
                nodes.append(helper.make_node("Identity", ["scores"], [out_name]))
                if probability:  # libsvm's -b 1 label is the likeliest class, not the pairwise vote's winner
                    nodes += [
                        helper.make_node("ArgMax", [out_name], ["which"], axis=1, keepdims=0),
                        helper.make_node("Gather", ["labels", "which"], ["label"]),
                    ]
            elif not probability:  # ONNX Runtime gives [-d, d]; libsvm's one decision value is d for (label[0], label[1])
                nodes.append(helper.make_node("Slice", ["scores", "one", "two", "one"], [out_name]))
            else:
                # Two classes: libsvm's Platt formula p0 = 1 / (1 + exp(A d + B)), clipped to [1e-7, 1 - 1e-7], and the
                # label of the likelier class. (ONNX Runtime would run the iterative multi-class coupling, which
                # differs from libsvm's closed form by up to 0.005 and can flip a label near 0.5.)
                inits += [
                    helper.make_tensor("neg_a", TensorProto.FLOAT, [], [-float(model.probA[0])]),
                    helper.make_tensor("neg_b", TensorProto.FLOAT, [], [-float(model.probB[0])]),
                    helper.make_tensor("lo", TensorProto.FLOAT, [], [1e-7]),
                    helper.make_tensor("hi", TensorProto.FLOAT, [], [1 - 1e-7]),
                    helper.make_tensor("one_f", TensorProto.FLOAT, [], [1.0]),
                ]
                nodes += [
                    helper.make_node("Slice", ["scores", "one", "two", "one"], ["d"]),
                    helper.make_node("Mul", ["d", "neg_a"], ["neg_ad"]),
                    helper.make_node("Add", ["neg_ad", "neg_b"], ["logit"]),
                    helper.make_node("Sigmoid", ["logit"], ["p0_raw"]),
                    helper.make_node("Clip", ["p0_raw", "lo", "hi"], ["p0"]),
                    helper.make_node("Sub", ["one_f", "p0"], ["p1"]),
                    helper.make_node("Concat", ["p0", "p1"], [out_name], axis=1),
                    helper.make_node("ArgMax", [out_name], ["which"], axis=1, keepdims=0),
                    helper.make_node("Gather", ["labels", "which"], ["label"]),
                ]
            outputs = [
                helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
                helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", width]),
            ]
        else:
            attrs["n_supports"] = int(model.l)
            nodes = [helper.make_node("SVMRegressor", [x.name], ["value"], domain="ai.onnx.ml", **attrs)]
            outputs = [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])]
            inits = []
        graph = helper.make_graph(nodes, "libsvm", [x], outputs, initializer=inits)
        onx = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", options.opset or 17), helper.make_opsetid("ai.onnx.ml", 1)],
            producer_name="golive",
            doc_string=f"LibSVM {loaded.kind}, {KERNELS[p.kernel_type].lower()} kernel",
        )
        onnx.checker.check_model(onx)
        name_batch_axis(onx)
        path.write_bytes(onx.SerializeToString())
        return ExportResult(
            exporter="golive-libsvm",
            attempts=[{"exporter": "golive-libsvm", "ok": True}],
            notes=[
                "converted by golive: onnxmltools' LibSVM converter does not import "
                "(onnx/onnxmltools#735); the same ONNX-ML SVM operators"
            ],
        )

    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        """libsvm's own prediction (the C functions svm_predict calls) on the same rows.

        libsvm-official 3.37's svmutil.svm_predict sizes its decision-value buffer for one value on a nu-SVC
        model (it lists NU_SVC where NU_SVR is meant) and the C code writes one per class pair past its end:
        a multi-class nu-SVC crashes the process. So golive calls the C functions with a buffer of the right size."""
        from ctypes import c_double

        from libsvm.svm import gen_svm_nodearray
        from libsvm.svm import libsvm as c_libsvm

        model = loaded.model
        x = next(iter(feeds.values()))
        nr_class = model.get_nr_class()
        probability = loaded.details["probability"]
        width = nr_class if probability else (nr_class * (nr_class - 1) // 2 if loaded.classifier else 1)
        buffer = (c_double * max(width, 1))()
        labels, values = [], []
        for row in x:
            node, _ = gen_svm_nodearray({k + 1: float(v) for k, v in enumerate(row) if v != 0.0})
            if probability:
                labels.append(c_libsvm.svm_predict_probability(model, node, buffer))
            else:
                labels.append(c_libsvm.svm_predict_values(model, node, buffer))
            values.append(buffer[:width])
        if not loaded.classifier:
            return {output_names[0]: np.asarray(labels, np.float32).reshape(-1, 1)}
        return {output_names[0]: np.asarray(labels).astype(np.int64), output_names[1]: np.asarray(values, np.float32)}


FRONTEND = LibSvmFrontend()
