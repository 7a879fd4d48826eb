"""CI glue (``python -m flagscale.ci``): device matrix, validation, one unpatch_and_test."""
