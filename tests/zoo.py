"""Small real models the tests share. Importable as a module (tests/zoo.py:Name) by golive convert."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MnistCNN(nn.Module):
    """The talk's MNIST network: conv 1→20 5x5, max-pool, conv 20→50 5x5, max-pool, fc 800→500, fc 500→10, log_softmax."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


class RNNLanguageModel(nn.Module):
    """The talk's word language model: Embedding + 2-layer nn.RNN taking (input, hidden); input is [sequence, batch]."""

    def __init__(self, vocab: int = 100, emb: int = 32, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Embedding(vocab, emb)
        self.rnn = nn.RNN(emb, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, input, hidden):
        output, hidden = self.rnn(self.encoder(input), hidden)
        return self.decoder(output), hidden


class LSTMTagger(nn.Module):
    """An LSTM taking its state (h0, c0) as inputs and returning the new state."""

    def __init__(self, features: int = 16, hidden: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(features, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, 5)

    def forward(self, x, h0, c0):
        out, (h, c) = self.lstm(x, (h0, c0))
        return self.head(out), h, c


class LoopAdd(nn.Module):
    """The talk's LoopAdd: adds 1 once per row. Tracing bakes the loop count in; scripting keeps a Loop."""

    def forward(self, x):
        h = x
        for _ in range(x.size(0)):
            h = h + 1
        return h


def _custom_ops():
    """The test's torch.library operators, defined once a process: zoo.py is executed again each time golive loads it
    by its path (file.py:Name) and once more as `import zoo`, and defining an operator again replaces the kernels torch's
    dispatcher holds (a run of the suite once crashed inside it, in a long-lived test process)."""
    import sys
    import types

    ops = sys.modules.get("golive_test_custom_ops")
    if ops is not None:
        return ops
    ops = types.ModuleType("golive_test_custom_ops")

    @torch.library.custom_op("golive_test::fancy_sin", mutates_args=())
    def fancy_sin(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2

    @fancy_sin.register_fake
    def _fancy_sin_fake(x):
        return torch.empty_like(x)

    @torch.library.custom_op("golive_test::inverse", mutates_args=())
    def inverse(a: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(a)

    @inverse.register_fake
    def _inverse_fake(a):
        return torch.empty_like(a)

    ops.fancy_sin, ops.inverse = fancy_sin, inverse
    sys.modules[ops.__name__] = ops
    return ops


fancy_sin = _custom_ops().fancy_sin
inverse = _custom_ops().inverse


class UsesCustomOp(nn.Module):
    """Calls an operator that neither exporter can translate."""

    def forward(self, x):
        return fancy_sin(x) + 1


class DenseThenCustomOp(nn.Module):
    """A layer INT8 can quantize, then the custom operator."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(32, 32)

    def forward(self, x):
        return fancy_sin(self.fc(x))


class SolvesWithInverse(nn.Module):
    """A custom operator whose ONNX Runtime implementation is a compiled library (onnxruntime-extensions')."""

    def forward(self, a, b):
        return inverse(a) @ b


def tiny_mlp() -> nn.Module:
    """A factory function (not a class) that builds a model."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class CloseTopTwo(nn.Module):
    """A classifier whose two leading classes score almost alike on every input: quantization noise flips
    its prediction while the scores' cosine similarity stays near 1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(32, 64)
        self.head = nn.Linear(64, 10)
        with torch.no_grad():
            self.head.weight[1] = self.head.weight[0] + 1e-3 * torch.randn(64)
            self.head.bias[:2] = 20.0

    def forward(self, x):
        return self.head(torch.relu(self.hidden(x)))


class TalkLSTM(nn.Module):
    """The talk's export slide: torch.onnx.export(model, (input, (h0, c0)), 'model.onnx'); returns (out, (h, c))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.LSTM(10, 20, 2)

    def forward(self, input, hc):
        return self.rnn(input, hc)


class TalkRNNModel(nn.Module):
    """The talk's word language model with an LSTM: forward(input, hidden), hidden = (h, c); returns (decoded, hidden)."""

    def __init__(self, vocab: int = 50, emb: int = 16, hidden: int = 24, layers: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, input, hidden):
        output, hidden = self.rnn(self.encoder(input), hidden)
        return self.decoder(output), hidden


class DictInput(nn.Module):
    """forward(features: dict) with a keyword-only mask; returns a dict holding a nested tuple."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dense = nn.Linear(6, 4)

    def forward(self, features, *, mask):
        hidden = self.dense(features["values"]) * features["scale"]
        return {"logits": hidden * mask, "extra": (hidden.sum(-1), hidden.amax(-1))}
