"""Model families: the offline toy family and the Qwen3-Base registry."""
