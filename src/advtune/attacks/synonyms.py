"""Word-substitution resources: stop words, synonym tables and word-vector neighbours.

The default candidate source is the PPDB synonym pairs used as linguistic constraints by
counter-fitting (Mrkšić et al., 2016), ``<data_dir>/synonyms/ppdb_synonyms.txt``: one pair per line,
read as symmetric. The counter-fitted vectors that TextFooler ranks candidates with are not
available offline, so candidates keep the file order (first seen first); a user synonym file (same
format, or ``word syn1 syn2 ...`` per line) or a word-vector file (``word v1 v2 ...``, GloVe /
counter-fitted text format; neighbours by cosine, TextFooler's threshold 0.5) can replace it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import UsageError

#: Words the attack never replaces (function words; TextFooler's list is of this kind). Lower case.
STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above across after afterwards again against ain all almost alone along already also although am among
    amongst an and another any anyhow anyone anything anyway anywhere are aren aren't around as at back be became
    because become becomes becoming been before beforehand behind being below beside besides between beyond both
    but by can cannot could couldn couldn't d didn didn't do does doesn doesn't doing don don't done down due during
    either else elsewhere empty enough even ever everyone everything everywhere except first for former formerly
    from had hadn hadn't has hasn hasn't have haven haven't having he hence her here hereafter hereby herein
    hereupon hers herself him himself his how however hundred i if in indeed into is isn isn't it it's its itself
    just latter latterly least ll m ma many may me meanwhile might mightn mightn't mine more moreover most mostly
    must mustn mustn't my myself n't namely needn needn't neither never nevertheless next no nobody none noone nor
    not nothing now nowhere o of off on once one only onto or other others otherwise our ours ourselves out over
    per please s same shan shan't she she's should should've shouldn shouldn't somehow something sometime
    somewhere such t than that that'll the their theirs them themselves then thence there thereafter thereby
    therefore therein thereupon these they this those through throughout thru thus to too toward towards under
    unless until up upon used ve was wasn wasn't we were weren weren't what whatever when whence whenever where
    whereafter whereas whereby wherein whereupon wherever whether which while whither who whoever whole whom
    whose why with within without won won't would wouldn wouldn't y yet you you'd you'll you're you've your
    yours yourself yourselves 's 're 've 'll 'd 'm will shall very so some few own each further
    """.split()
)


def is_stop_word(word: str) -> bool:
    return word.lower() in STOP_WORDS


def default_synonym_file(data_dir: str | os.PathLike | None) -> Path:
    """``<data_dir>/synonyms/ppdb_synonyms.txt`` (``data_dir`` defaults to ``$ADVTUNE_DATA_DIR``)."""
    base = data_dir or os.environ.get("ADVTUNE_DATA_DIR")
    if not base:
        raise UsageError("no synonym source: pass --synonyms FILE or --data-dir (or set ADVTUNE_DATA_DIR)")
    path = Path(base) / "synonyms" / "ppdb_synonyms.txt"
    if not path.is_file():
        raise UsageError(f"synonym file {path} not found (pass --synonyms FILE)")
    return path


class SynonymTable:
    """Candidate replacements per (lower-cased) word, in a deterministic order.

    Args:
        pairs (`Iterable[tuple[str, str]]`): synonym pairs; each is added in both directions.
        name (`str`): where the table came from (recorded in the attack's metrics).
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = (), name: str = "custom") -> None:
        self.name = name
        self._syn: dict[str, dict[str, None]] = {}  # dict as an ordered set
        for a, b in pairs:
            self.add(a, b)

    def add(self, a: str, b: str) -> None:
        a, b = a.lower(), b.lower()
        if a == b:
            return
        self._syn.setdefault(a, {})[b] = None
        self._syn.setdefault(b, {})[a] = None

    def candidates(self, word: str, k: int) -> list[str]:
        """At most ``k`` candidates for ``word`` (never the word itself, never a stop word)."""
        out = [w for w in self._syn.get(word.lower(), {}) if not is_stop_word(w)]
        return out[:k]

    def __len__(self) -> int:
        return len(self._syn)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SynonymTable:
        """Read ``a b`` pairs, or ``word syn1 syn2 ...`` lines (the first word's synonyms)."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"synonym file {path} not found")
        table = cls(name=path.name)
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                for other in parts[1:]:
                    table.add(parts[0], other)
        if not len(table):
            raise UsageError(f"synonym file {path} holds no word pairs")
        return table


class WordVectorNeighbours(SynonymTable):
    """Candidates = nearest neighbours by cosine in a word-vector file (TextFooler: cos >= 0.5).

    Neighbours are computed on demand per word and cached, so loading stays linear in the file size.
    """

    def __init__(self, path: str | os.PathLike, min_cosine: float = 0.5, max_words: int | None = None) -> None:
        import numpy as np

        super().__init__(name=Path(path).name)
        words, vecs = [], []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh):
                parts = line.rstrip().split(" ")
                if len(parts) < 3 or (i == 0 and len(parts) == 2):  # word2vec header line
                    continue
                words.append(parts[0].lower())
                vecs.append(np.asarray(parts[1:], dtype=np.float32))
                if max_words and len(words) >= max_words:
                    break
        if not words:
            raise UsageError(f"word-vector file {path} holds no vectors")
        mat = np.stack(vecs)
        self._mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        self._index = {w: i for i, w in enumerate(words)}
        self._words = words
        self.min_cosine = min_cosine

    def candidates(self, word: str, k: int) -> list[str]:
        key = word.lower()
        if key not in self._syn:
            i = self._index.get(key)
            self._syn[key] = {}
            if i is not None:
                sims = self._mat @ self._mat[i]
                for j in sims.argsort()[::-1][: 4 * k + 1]:
                    if j != i and sims[j] >= self.min_cosine:
                        self._syn[key][self._words[j]] = None
        return super().candidates(word, k)

    def __len__(self) -> int:
        return len(self._words)


def load_candidates(
    synonyms: str | os.PathLike | None = None,
    word_vectors: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> SynonymTable:
    """The candidate source: a word-vector file, a synonym file, or the shared PPDB pairs."""
    if word_vectors:
        if not Path(word_vectors).is_file():
            raise UsageError(f"word-vector file {word_vectors} not found")
        return WordVectorNeighbours(word_vectors)
    table = SynonymTable.from_file(synonyms or default_synonym_file(data_dir))
    if not synonyms:
        table.name = "ppdb_synonyms"
    return table
