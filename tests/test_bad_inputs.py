"""The bad-input table: each row is a mistaken or hostile input to the public surface (model, media loaders,
pipeline, converter, training data and cache) with the error it must raise, or the warning it must give, and the words
its message must contain (the argument or file, the value, what to do). A new case is one row in one of the
`cases_*.py` modules."""

import logging

import pytest
from cases_converter import CASES as CONVERTER_CASES
from cases_media import CASES as MEDIA_CASES
from cases_model import CASES as MODEL_CASES
from cases_training import CASES as TRAINING_CASES

ROWS = [*MODEL_CASES, *MEDIA_CASES, *CONVERTER_CASES, *TRAINING_CASES]


def test_the_table_is_large_and_its_names_unique():
    assert len(ROWS) >= 40
    names = [case.name for case in ROWS]
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)


@pytest.mark.parametrize("case", ROWS, ids=lambda case: case.name)
def test_bad_input(case, tmp_path, caplog):
    if case.error is not None:
        with pytest.raises(case.error) as raised:
            case.call(tmp_path)
        message = str(raised.value)
    else:
        logging.Logger.warning_once.cache_clear()  # transformers' once-per-process warnings, again for this row
        with caplog.at_level(logging.WARNING):
            case.call(tmp_path)
        message = "\n".join(record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)
        assert message, f"{case.name}: no warning"
    missing = [word for word in case.words if word not in message]
    assert not missing, f"{case.name}: {missing} not in {message!r}"
