"""lmms-eval registration of the `omnisift` model (entry-point group `lmms_eval.models`).

lmms-eval loads every `lmms_eval.models` entry point while `lmms_eval.models` itself is being imported, for every
model and task. So this module imports nothing: it only names the class, `omnisift_hf.tools.lmms_eval_model.OmniSift`,
which lmms-eval imports (with torch, transformers and omnisift_hf) when `--model omnisift` is asked for. It lives
outside the `omnisift_hf` package because importing anything inside it runs `omnisift_hf/__init__.py` (transformers,
about 4 s).
"""

MODEL_ID = "omnisift"
CLASS_PATH = "omnisift_hf.tools.lmms_eval_model.OmniSift"


def manifest():
    """The `ModelManifest` of `--model omnisift` (a "simple" lmms-eval model: requests carry `doc_to_visual`)."""
    from lmms_eval.models.registry_v2 import ModelManifest  # already imported: lmms-eval calls this while loading

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)
