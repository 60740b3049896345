"""Training algorithms (SAC/Cal-QL/WSRL, Decision Transformers)."""
