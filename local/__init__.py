"""Local development tooling: the WeChat sandbox and helpers for the local stack and demo."""
