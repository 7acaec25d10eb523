"""Document functions of the `avqa_omnisift` lmms-eval task (avqa_omnisift.yaml). Clip paths in `test.jsonl` are
relative to the `data/` folder beside this file, where make_data.py writes them."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


def avqa_doc_to_visual(doc):
    return [str(DATA_DIR / doc["video"])]


def avqa_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    # The question alone, as the AVQA checkpoint was trained and as evaluate_avqa asks it.
    return doc["question"]


def avqa_process_results(doc, results):
    prediction = results[0].strip()
    return {"accuracy": float(prediction == doc["answer"].strip())}
