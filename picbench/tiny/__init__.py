"""Small random-weight models of the real architectures, for tests and ``--models tiny`` smoke runs.

One place for all of them: the tokenizers (:mod:`.tokenizers`), the atomic publishing of a built
folder (:mod:`.publish`), the metric models (:mod:`.metric_models`), the Stable Diffusion parts
(:mod:`.sd`) and the FLUX parts (:mod:`.flux`). Images and numbers made with these weights mean
nothing: callers mark such runs as smoke runs.
"""
