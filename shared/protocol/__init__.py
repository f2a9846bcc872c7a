"""Wire models only: no logic beyond converting a request into parameters."""
