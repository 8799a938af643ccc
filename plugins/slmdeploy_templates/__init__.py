"""slmdeploy's chat template families, one small plugin (entry point) per family.

Each module registers its family class and claims models through ``slmdeploy_template_family``: the
specific families (Qwen, Phi, Llama) are tried first, then generic ChatML, and last ``derived``, which takes
the format from the tokenizer's own chat template so that any model with one still deploys.
"""
