"""The GA-DMS method: GA score, dual masking and losses (docs/method.md)."""
