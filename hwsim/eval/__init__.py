"""hwsim.eval: offline model zoo, corpora and accuracy metrics.

Submodules (import them directly; nothing heavy is imported here):

* ``hwsim.eval.models``     ``load(name) -> (model, tokenizer)``, ``config(name)``
* ``hwsim.eval.data``       ``load(corpus, split) -> str``, ``calibration_set(tokenizer, ...)``
* ``hwsim.eval.perplexity`` ``perplexity``, ``evaluate``, ``relative_error``,
  ``layer_output_errors``
* ``hwsim.eval.fetch``      ``fetch_model``, ``fetch_corpus``, ``fetch_default``
* ``hwsim.eval.rdata``      reader for R lazy-load databases (``.rdb``/``.rdx``) and ``.rds``
* ``hwsim.eval.cache``      ``$HWSIM_CACHE`` and atomic directory writes
"""
