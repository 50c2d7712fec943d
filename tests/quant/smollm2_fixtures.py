"""Fixtures shared by the SmolLM2 integration tests (imported into their modules)."""

import pytest
import torch

N_CALIB, CALIB_LEN = 8, 256
EVAL = dict(seq_len=256, n_tokens=512, progress=False)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the per-layer SVDs/factorisations slow down badly with 2 OpenMP threads
    when the CI cores are shared (oversubscription); one thread keeps the tests predictable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def zoo():
    """(hwsim.eval.models, tokenizer, austen calibration set); skips without the offline zoo."""
    models = pytest.importorskip("hwsim.eval.models")
    from hwsim.eval import data

    try:
        model, tok = models.load("smollm2-135m", progress=False)
        calib = data.calibration_set(tok, "austen", n=N_CALIB, seq_len=CALIB_LEN, seed=0)
    except FileNotFoundError as exc:  # MissingResourceError: run scripts/setup.sh
        pytest.skip(f"offline model zoo not available: {exc}")
    return models, tok, calib
