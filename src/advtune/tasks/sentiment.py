"""Out-of-domain sentiment test sets: Amazon reviews of books, DVDs, electronics and kitchen appliances.

Blitzer et al. (2007) review domains, used to test models trained on SST-2 on other text (loaders only;
the transfer protocol lives in :mod:`advtune.evaluation`). Local only (no canonical hub copy):
``sentiment_domains/<domain>/test.tsv`` with a ``sentence<TAB>label`` header and 0/1 labels. Reviews are
long and span several lines inside double-quoted fields, so the file is read with standard CSV quoting
(unlike the GLUE files). Label names equal SST-2's, in the same order, so an SST-2 model scores them
directly.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .base import LocalHubLoader, Rows, Task
from .glue import SST2, column, read_tsv

DOMAINS = ("books", "dvd", "electronics", "kitchen")


def read_reviews(path: Path, split: str) -> Rows:
    """``sentence<TAB>label`` TSV with quoted multi-line fields; inner whitespace runs kept as they are."""
    frame = read_tsv(path, quoting=csv.QUOTE_MINIMAL)
    return {"text_a": column(frame, ("sentence", "text", "review"), path), "label": column(frame, ("label",), path)}


def _domain(domain: str) -> Task:
    return Task(
        name=domain,
        label_names=SST2.label_names,
        metric="accuracy",
        pair=False,
        text_fields=("sentence",),
        train_split="test",
        eval_splits=("test",),
        splits=("test",),
        loader=LocalHubLoader(folder=f"sentiment_domains/{domain}", files={"test": ("test.tsv",)}, read=read_reviews),
        description=f"Amazon '{domain}' reviews (Blitzer et al. 2007): out-of-domain sentiment test set",
    )


SENTIMENT_TASKS = tuple(_domain(d) for d in DOMAINS)
