"""The zero-shot part of CLIP: class names into prompts (`prompts`), prompts into the ensembled classifier matrix
(`classifier`), and the scoring, logits = logit_scale * cosine -> softmax (`similarity`)."""
