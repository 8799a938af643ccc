"""How closely a model follows another: teacher-forced next-token logits compared position by position.

Feed both models the same token ids, take each one's logits at every position (`slmdeploy.plugin.genai.genai_logits`
for a package), then::

    from slmdeploy.plugin.fidelity import add_sums, fidelity_figures, fidelity_sums

    sums = add_sums(fidelity_sums(reference_logits, candidate_logits, ids) for ... in texts)
    fidelity_figures(sums)
    # {"top1_agreement": 0.97, "mean_kl": 0.004, "perplexity": 6.3, "reference_perplexity": 6.2,
    #  "max_abs_logit_diff": 1.9}

The sums add up over several texts before the figures are taken, so a long text weighs as much as its tokens.
numpy is imported inside the functions.
"""

from __future__ import annotations

from slmdeploy.model.fidelity import add_sums, fidelity_figures, fidelity_sums

__all__ = ["add_sums", "fidelity_figures", "fidelity_sums"]
