"""pytest at the repository root: the tests live in tests/. test_tflite_models.py and
test_single_sample.py up here are command-line scripts with the seed's names, not test modules,
so pytest never collects them (plain `pytest`, `pytest .`, or naming them)."""
collect_ignore = ["test_tflite_models.py", "test_single_sample.py"]
