"""The real-size run (`make realsize`): the random Qwen3-0.6B exported and decoded against the contenders."""
